// Experience center: chat with one model or two side by side. Streams the gateway's server-sent events with
// fetch, so tokens appear as they arrive; Stop aborts the fetch, which closes the request the gateway forwards.
(function () {
  "use strict";
  const form = document.getElementById("playground");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const t = JSON.parse($("pg-i18n").textContent);
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
  let panes = [];
  let running = [];

  function settings() {
    return {
      temperature: parseFloat($("pg-temperature").value),
      top_p: parseFloat($("pg-top-p").value),
      max_tokens: parseInt($("pg-max-tokens").value, 10),
    };
  }

  function body(pane) {
    const system = $("pg-system").value.trim();
    const messages = (system ? [{ role: "system", content: system }] : []).concat(pane.messages);
    return Object.assign({ model: pane.model, messages: messages }, settings(), { stream: true });
  }

  function snippet() {
    const pane = panes[0];
    if (!pane) return;
    const b = body(pane);
    const py = (v) => JSON.stringify(v, null, 4).replace(/\n/g, "\n    ");
    $("pg-snippet").textContent =
      "from zhipuai import ZhipuAI\n\n" +
      'client = ZhipuAI(api_key="<your API key>", base_url="' + form.dataset.baseUrl + '")\n' +
      "response = client.chat.completions.create(\n" +
      "    model=" + JSON.stringify(b.model) + ",\n" +
      "    messages=" + py(b.messages) + ",\n" +
      "    temperature=" + b.temperature + ",\n" +
      "    top_p=" + b.top_p + ",\n" +
      "    max_tokens=" + b.max_tokens + ",\n" +
      "    stream=True,\n" +
      ")\n" +
      "for chunk in response:\n" +
      '    print(chunk.choices[0].delta.content or "", end="")\n';
  }

  function addMessage(pane, role, text) {
    const div = document.createElement("div");
    div.className = "pg-msg " + role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? t.you : role === "error" ? t.error : pane.model;
    const span = document.createElement("span");
    span.className = "text";
    span.textContent = text || "";
    div.append(who, span);
    pane.log.append(div);
    pane.log.scrollTop = pane.log.scrollHeight;
    return span;
  }

  function build() {
    stopAll();
    const codes = [$("pg-model").value];
    const compare = $("pg-compare").value;
    if (compare) codes.push(compare);
    const holder = $("pg-panes");
    holder.replaceChildren();
    panes = codes.map(function (code, i) {
      const node = $("pg-pane-template").content.firstElementChild.cloneNode(true);
      node.querySelector("code").textContent = code;
      node.dataset.model = code;
      node.dataset.index = String(i);
      holder.append(node);
      return { model: code, messages: [], log: node.querySelector(".pg-log"), stats: node.querySelector(".pg-stats"), node: node };
    });
    snippet();
  }

  async function run(pane) {
    const controller = new AbortController();
    running.push(controller);
    const requestBody = JSON.stringify(body(pane));
    const out = addMessage(pane, "assistant", "");
    pane.node.dataset.state = "streaming";
    const started = performance.now();
    let first = null, chunks = 0, usage = null, answer = "", stopped = false;
    try {
      const response = await fetch(form.dataset.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: requestBody,
        signal: controller.signal,
        credentials: "same-origin",
      });
      if (!response.ok) {
        let message = response.status + " " + response.statusText;
        try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
        throw new Error(message);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
          if (!data || data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          const text = delta && delta.content;
          if (text) {
            if (first === null) first = performance.now();
            chunks += 1;
            answer += text;
            out.append(document.createTextNode(text));
            pane.log.scrollTop = pane.log.scrollHeight;
          }
        }
      }
    } catch (err) {
      if (err.name === "AbortError") {
        stopped = true;
      } else {
        addMessage(pane, "error", err.message);
      }
    } finally {
      running = running.filter((c) => c !== controller);
      const end = performance.now();
      if (answer) pane.messages.push({ role: "assistant", content: answer });
      const completion = usage ? usage.completion_tokens : chunks;
      const parts = [];
      if (first !== null) {
        parts.push(t.ttft + " " + Math.round(first - started) + " ms");
        const seconds = (end - first) / 1000;
        if (seconds > 0 && completion > 1) parts.push(((completion - 1) / seconds).toFixed(1) + " " + t.tps);
      }
      // The prompt's count comes with the gateway's usage on the last chunk; a stopped answer has none.
      const prompt = usage && usage.prompt_tokens != null ? usage.prompt_tokens + " " + t.prompt + " / " : "";
      parts.push(prompt + completion + " " + t.completion + " " + t.tokens);
      if (stopped) parts.push(t.stopped);
      pane.stats.textContent = parts.join(" · ");
      pane.node.dataset.state = stopped ? "stopped" : "done";
      pane.node.dataset.ttftMs = first === null ? "" : String(Math.round(first - started));
      if (!running.length) {
        $("pg-send").disabled = false;
        $("pg-stop").disabled = true;
      }
    }
  }

  function stopAll() {
    running.slice().forEach((c) => c.abort());
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = $("pg-message").value.trim();
    if (!text || running.length) return;
    $("pg-message").value = "";
    $("pg-send").disabled = true;
    $("pg-stop").disabled = false;
    panes.forEach(function (pane) {
      pane.messages.push({ role: "user", content: text });
      addMessage(pane, "user", text);
    });
    snippet();
    panes.forEach(run);
  });
  $("pg-message").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  $("pg-stop").addEventListener("click", stopAll);
  $("pg-clear").addEventListener("click", build);
  $("pg-model").addEventListener("change", build);
  $("pg-compare").addEventListener("change", build);
  ["pg-temperature", "pg-top-p", "pg-max-tokens", "pg-system"].forEach((id) => $(id).addEventListener("input", snippet));
  build();
})();
