// The create form: offer only the methods and training types the chosen base model allows.
(function () {
  const form = document.getElementById("job-form");
  const caps = JSON.parse(document.getElementById("model-capabilities").textContent);
  if (!form) return;
  const model = form.querySelector("#id_base_model");
  function restrict(selectId, allowed) {
    const select = form.querySelector(selectId);
    if (!select) return;
    let firstAllowed = null;
    for (const option of select.options) {
      option.disabled = !allowed.includes(option.value);
      if (!option.disabled && firstAllowed === null) firstAllowed = option.value;
    }
    if (select.selectedOptions[0] && select.selectedOptions[0].disabled && firstAllowed !== null) {
      select.value = firstAllowed;
    }
  }
  function apply() {
    const c = caps[model.value];
    if (!c) return;
    restrict("#id_method", c.methods);
    restrict("#id_training_type", c.training_types);
  }
  model.addEventListener("change", apply);
  apply();
})();
