// Copy buttons: <button data-copy="#element-id"> copies that element's text.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = source.innerText.trim();
  const done = () => {
    const label = button.textContent;
    button.textContent = button.dataset.copied || "✓";
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => fallback(text) && done());
  } else if (fallback(text)) {
    done();
  }
});

function fallback(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  area.remove();
  return ok;
}

// The menu button (phone-width screens) opens and closes the side navigation.
document.addEventListener("click", (event) => {
  const button = event.target.closest(".menu-button");
  const nav = document.getElementById("sidenav");
  if (!nav) return;
  if (button) {
    const open = nav.classList.toggle("open");
    button.setAttribute("aria-expanded", open ? "true" : "false");
  } else if (nav.classList.contains("open") && !nav.contains(event.target)) {
    nav.classList.remove("open");
    document.querySelector(".menu-button")?.setAttribute("aria-expanded", "false");
  }
});
