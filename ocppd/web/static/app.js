// Live updates for the status page (server-sent events from /events) and confirmations.
// Plain script, no build step; Chart.js comes from Debian's libjs-chart.js when installed.
(function () {
"use strict";

document.querySelectorAll("form[data-confirm]").forEach(function (form) {
  form.addEventListener("submit", function (e) {
    if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
  });
});

var charts = {};

function kw(w) { return w === null || w === undefined ? "–" : (w / 1000).toFixed(2); }
function kwh(wh) { return wh === null || wh === undefined ? "–" : (wh / 1000).toFixed(3); }

function makeChart(canvas, points) {
  if (typeof Chart === "undefined") { return null; }
  var labels = points.map(function (p) { return p.at.substr(11, 8); });
  return new Chart(canvas, {
    type: "line",
    data: {
      labels: labels,
      datasets: [
        { label: "Power kW", data: points.map(function (p) { return p.power_w / 1000; }),
          borderColor: "#003d99", backgroundColor: "#003d99", yAxisID: "p", pointRadius: 0,
          borderWidth: 3 },
        { label: "Energy kWh", data: points.map(function (p) { return p.energy_wh / 1000; }),
          borderColor: "#a00000", backgroundColor: "#a00000", yAxisID: "e", pointRadius: 0,
          borderWidth: 3, borderDash: [6, 3] }
      ]
    },
    options: {
      animation: false, maintainAspectRatio: false, responsive: true,
      scales: {
        p: { position: "left", beginAtZero: true, title: { display: true, text: "kW", color: "#000" },
             ticks: { color: "#000" } },
        e: { position: "right", beginAtZero: true, title: { display: true, text: "kWh", color: "#000" },
             ticks: { color: "#000" }, grid: { drawOnChartArea: false } },
        x: { ticks: { color: "#000", maxTicksLimit: 6 } }
      },
      plugins: { legend: { labels: { color: "#000" } } }
    }
  });
}

var historyEl = document.getElementById("history");
var sessionHistory = historyEl ? JSON.parse(historyEl.getAttribute("data-history") || "{}") : {};
document.querySelectorAll("canvas.chart").forEach(function (canvas) {
  var cid = canvas.getAttribute("data-connector");
  charts[cid] = makeChart(canvas, sessionHistory[cid] || []);
  canvas.setAttribute("data-points", String((sessionHistory[cid] || []).length));
});

function setField(cid, name, text) {
  var card = document.getElementById("connector-" + cid);
  if (!card) { return; }
  var el = card.querySelector('[data-field="' + name + '"]');
  if (el) { el.textContent = text; }
}

function addPoint(ev) {
  var cid = String(ev.connector_id);
  var chart = charts[cid];
  var canvas = document.getElementById("chart-" + cid);
  if (canvas) {
    canvas.setAttribute("data-points", String(Number(canvas.getAttribute("data-points") || 0) + 1));
  }
  if (!chart) { return; }
  chart.data.labels.push(ev.at.substr(11, 8));
  chart.data.datasets[0].data.push((ev.power_w || 0) / 1000);
  chart.data.datasets[1].data.push((ev.energy_wh || 0) / 1000);
  chart.update("none");
}

if (document.getElementById("conn-state") && window.EventSource) {
  var source = new EventSource("/events");
  var reloadSoon = null;
  var reload = function () {  // sessions start and stop: the actions on offer change
    if (reloadSoon === null) { reloadSoon = setTimeout(function () { location.reload(); }, 300); }
  };
  source.addEventListener("reading", function (m) {
    var ev = JSON.parse(m.data);
    setField(ev.connector_id, "power_kw", kw(ev.power_w));
    setField(ev.connector_id, "energy_kwh", kwh(ev.energy_wh));
    setField(ev.connector_id, "limit_a", ev.limit_a === null ? "–" : String(ev.limit_a));
    addPoint(ev);
  });
  source.addEventListener("status", function (m) {
    var ev = JSON.parse(m.data);
    ["status", "error", "pilot", "contactor"].forEach(function (k) { setField(ev.connector_id, k, ev[k]); });
    setField(ev.connector_id, "limit_a", ev.limit_a === null ? "–" : String(ev.limit_a));
  });
  source.addEventListener("connection", function (m) {
    var ev = JSON.parse(m.data);
    var st = document.getElementById("conn-state");
    st.textContent = ev.state; st.className = "badge " + ev.state;
    document.getElementById("conn-registration").textContent = ev.registration;
    document.getElementById("conn-error").textContent = ev.last_error || "none";
  });
  source.addEventListener("session_started", reload);
  source.addEventListener("session_stopped", reload);
  source.addEventListener("logout", function () { source.close(); location.href = "/login"; });
}
})();
