// Dataset upload: drag and drop, and a progress bar from the browser's real upload progress events.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var input = form.querySelector("input[type=file]");
  var zone = document.getElementById("dropzone");
  var chosen = document.getElementById("chosen-file");
  var box = document.getElementById("upload-progress");
  var bar = document.getElementById("upload-bar");
  var status = document.getElementById("upload-status");
  var errorBox = document.getElementById("upload-error");
  var button = document.getElementById("upload-button");
  var maxBytes = parseInt(form.dataset.maxBytes || "0", 10);

  function human(n) {
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }
  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }
  function describe() {
    var file = input.files && input.files[0];
    chosen.textContent = file ? file.name + " · " + human(file.size) : "";
    showError("");
    if (file && maxBytes && file.size > maxBytes) showError(form.dataset.msgTooLarge + " (" + human(maxBytes) + ")");
    else if (file && file.size === 0) showError(form.dataset.msgEmpty);
  }
  input.addEventListener("change", describe);

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      describe();
    }
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var file = input.files && input.files[0];
    if (!file) { showError(form.dataset.msgChoose); return; }
    if (maxBytes && file.size > maxBytes) { showError(form.dataset.msgTooLarge + " (" + human(maxBytes) + ")"); return; }
    if (file.size === 0) { showError(form.dataset.msgEmpty); return; }
    showError("");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    box.hidden = false;
    button.disabled = true;
    xhr.upload.addEventListener("progress", function (ev) {
      if (!ev.lengthComputable) return;
      var pct = Math.floor((ev.loaded / ev.total) * 100);
      bar.style.width = pct + "%";
      status.textContent = form.dataset.msgUploading + " " + human(ev.loaded) + " / " + human(ev.total) + " (" + pct + "%)";
    });
    xhr.upload.addEventListener("load", function () { status.textContent = form.dataset.msgProcessing; });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      if (xhr.status === 201 && body && body.url) { window.location.assign(body.url); return; }
      button.disabled = false;
      box.hidden = true;
      var messages = [];
      if (body && body.errors) {
        Object.keys(body.errors).forEach(function (k) { messages = messages.concat(body.errors[k]); });
      }
      showError(messages.join(" ") || (xhr.status + " " + xhr.statusText));
    });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      box.hidden = true;
      showError(form.dataset.msgFailed);
    });
    xhr.send(new FormData(form));
  });
})();
