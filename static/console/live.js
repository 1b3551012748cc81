// Live regions are swapped whole by polling (hx-trigger="every 2s"). A field the person is editing (focused, or
// changed from what the page gave it) keeps its value across the swap: the value goes into the new HTML before
// htmx swaps it in, marked data-edited so that it stays the person's until the form is sent. htmx itself keeps
// the focus and the caret of a field with an id.
(function () {
  const FIELDS = "input:not([type=hidden]):not([type=submit]):not([type=button]), textarea, select";

  function edited(field) {
    if (field === document.activeElement || field.hasAttribute("data-edited")) return true;
    if (field.type === "checkbox" || field.type === "radio") return field.checked !== field.defaultChecked;
    if (field.tagName === "SELECT") return [...field.options].some((o) => o.selected !== o.defaultSelected);
    return field.value !== field.defaultValue;
  }

  function selector(field) {
    if (field.id) return "#" + CSS.escape(field.id);
    if (field.name) return `[name="${CSS.escape(field.name)}"]`;
    return null;
  }

  function carry(field, copy) {
    copy.setAttribute("data-edited", "");
    if (field.type === "checkbox" || field.type === "radio") {
      copy.toggleAttribute("checked", field.checked);
    } else if (field.tagName === "SELECT") {
      for (const option of copy.options) option.toggleAttribute("selected", [...field.selectedOptions].some((o) => o.value === option.value));
    } else if (field.tagName === "TEXTAREA") {
      copy.textContent = field.value;
    } else {
      copy.setAttribute("value", field.value);
    }
  }

  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (!target || !event.detail.shouldSwap || typeof event.detail.serverResponse !== "string") return;
    const fields = [...target.querySelectorAll(FIELDS)].filter(edited);
    if (!fields.length) return;
    const template = document.createElement("template");
    template.innerHTML = event.detail.serverResponse;
    let changed = false;
    for (const field of fields) {
      const key = selector(field);
      const copy = key && template.content.querySelector(key);
      if (copy) {
        carry(field, copy);
        changed = true;
      }
    }
    if (changed) event.detail.serverResponse = template.innerHTML;
  });
})();
