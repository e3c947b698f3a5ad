// Live updates (poll /api/live with back-off), charts, and the chat box.
(function () {
  "use strict";
  const BASE_DELAY = 2000, MAX_DELAY = 30000, MIN_REFRESH = 3000;
  const banner = document.getElementById("node-banner");
  const liveLine = document.getElementById("live");
  let delay = BASE_DELAY, lastHeight = null, lastRefresh = Date.now();

  function showBanner(text) { banner.textContent = text; banner.hidden = false; }

  async function poll() {
    try {
      const response = await fetch("/api/live", {cache: "no-store"});
      const live = await response.json();
      if (live.node_down || live.error) throw new Error(live.error || "the node is not answering");
      banner.hidden = true;
      delay = BASE_DELAY;
      const round = live.round ? ` · round #${live.round.round} ${live.round.phase}` +
        (live.round.blocks_left !== null ? ` (${live.round.blocks_left} blocks left)` : "") : "";
      liveLine.textContent = `height ${live.height}${round}`;
      liveLine.dataset.height = live.height;
      if (lastHeight !== null && live.height !== lastHeight && Date.now() - lastRefresh >= MIN_REFRESH) {
        lastRefresh = Date.now();
        document.querySelectorAll("[data-live]").forEach((el) => htmx.trigger(el, "chain-moved"));
      }
      lastHeight = live.height;
    } catch (err) {
      delay = Math.min(delay * 2, MAX_DELAY);
      showBanner(`${err.message || "the explorer is not answering"}; retrying in ${Math.round(delay / 1000)} s`);
      liveLine.textContent = "node away";
    }
    setTimeout(poll, delay);
  }

  function drawCharts(root) {
    root.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
      const data = JSON.parse(canvas.dataset.chart);
      const old = Chart.getChart(canvas);
      if (old) old.destroy();
      new Chart(canvas, {
        type: "line",
        data: {
          labels: data.versions.map((v) => "v" + v),
          datasets: [
            {label: "held-out loss (nats/token)", data: data.held_out_loss, yAxisID: "loss", borderColor: "#2b6cb0", backgroundColor: "#2b6cb0", spanGaps: true},
            {label: "prompts correct (%)", data: data.prompt_score, yAxisID: "score", borderColor: "#dd6b20", backgroundColor: "#dd6b20", spanGaps: true},
          ],
        },
        options: {
          animation: false, responsive: true,
          scales: {
            loss: {type: "linear", position: "left", title: {display: true, text: "held-out loss"}},
            score: {type: "linear", position: "right", min: 0, max: 100, grid: {drawOnChartArea: false}, title: {display: true, text: "prompts correct %"}},
          },
        },
      });
    });
  }

  function setupChat() {
    const form = document.getElementById("chat-form");
    if (!form) return;
    const transcript = document.getElementById("transcript");
    const box = document.getElementById("chat-message");
    const status = document.getElementById("chat-status");
    const send = document.getElementById("chat-send");

    function bubble(role, text) {
      const div = document.createElement("div");
      div.className = "msg " + role;
      div.textContent = text;
      transcript.appendChild(div);
      return div;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const message = box.value.trim();
      if (!message) return;
      box.value = "";
      send.disabled = true;
      bubble("user", message);
      const answer = bubble("assistant", "");
      const who = document.createElement("div");
      who.className = "who";
      answer.before(who);
      const version = document.getElementById("chat-version").value;
      status.textContent = "pulling, verifying and loading the model if needed…";
      try {
        const response = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({message, version: version === "" ? null : Number(version)})});
        const showError = (text) => { answer.classList.add("error"); answer.textContent = text; status.textContent = text; };
        const handle = (line) => {
          if (!line.trim()) return;
          let event;
          try { event = JSON.parse(line); } catch (err) { showError(`the explorer answered HTTP ${response.status}: ${line.slice(0, 200)}`); return; }
          if (event.error) showError(event.error);
          if (event.version !== undefined) {
            who.textContent = `v${event.version} (${event.family}) · cid ${event.cid}`;
            who.dataset.version = event.version; who.dataset.cid = event.cid;
            status.textContent = `answered by v${event.version}, cid ${event.cid}`;
          }
          if (event.text !== undefined) { answer.textContent += event.text; transcript.scrollTop = transcript.scrollHeight; }
          if (event.done) answer.dataset.done = "1";
        };
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffered = "";
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, {stream: true});
          let newline;
          while ((newline = buffered.indexOf("\n")) >= 0) {
            handle(buffered.slice(0, newline));
            buffered = buffered.slice(newline + 1);
          }
        }
        handle(buffered + decoder.decode());  // an answer without a final newline (an error page, a proxy's text)
        if (!response.ok && !answer.classList.contains("error")) showError(`the explorer answered HTTP ${response.status}`);
      } catch (err) {
        answer.classList.add("error");
        answer.textContent = "the explorer did not answer: " + err.message;
      } finally {
        send.disabled = false;
      }
    });

    document.getElementById("chat-reset").addEventListener("click", async () => {
      await fetch("/api/chat/reset", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
      transcript.replaceChildren();
      status.textContent = "conversation reset";
    });
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
    });
  }

  document.addEventListener("htmx:afterSwap", (event) => drawCharts(event.target));
  drawCharts(document);
  setupChat();
  poll();
})();
