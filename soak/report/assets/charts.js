/* soak interactive charts: zoom and hover for report.html, offline, no library.
 *
 * Reads the JSON of the element #soak-chart-data (written by soak/report/charts.py):
 * {x_label, x_scale, x_end, idle: [[s, s]], saturated: [[s, s]], charts: [{id, title,
 * unit, log, zero, series: [{label, colour, dash, x: [s], y: [v|null]}]}]}; x is elapsed
 * seconds. Every chart shares one x range: drag across any chart to zoom all of them,
 * double-click (or "reset zoom") to see the whole run again. Hover shows a crosshair on
 * every chart and the values under it; clicking a legend entry hides or shows a series.
 * Idle intervals and soak-saturated spans are shaded as in the PNG plots.
 */
(function () {
  "use strict";

  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 960;
  const HEIGHT = 230;
  const MARGIN = { left: 68, right: 14, top: 8, bottom: 30 };
  const IDLE_FILL = "rgba(43, 108, 176, 0.10)";
  const SATURATED_FILL = "rgba(128, 128, 128, 0.28)";

  /* ---- pure helpers (exported for tests) ---------------------------------------- */

  /** Round tick steps 1-2-5 per decade, about `count` ticks between lo and hi. */
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(count, 1);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  /** Ticks 1-2-5 per decade for a log axis between lo > 0 and hi. */
  function logTicks(lo, hi) {
    const ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * Math.pow(10, e);
        if (v >= lo && v <= hi) ticks.push(v);
      }
    }
    return ticks.length ? ticks : [lo, hi];
  }

  /** A number for an axis or tooltip: 1,234 / 12.3 / 0.0123 / 1.2e-5. */
  function formatNumber(v) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e5) return Math.round(v).toLocaleString("en-US");
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1).replace(/\.0$/, "");
    if (a >= 0.01) return v.toPrecision(3).replace(/\.?0+$/, "");
    return v.toExponential(1);
  }

  /** A value in the chart's unit; "s" values read as ms or s. */
  function formatValue(v, unit) {
    if (unit === "s" && v !== null && isFinite(v)) {
      return Math.abs(v) < 1 ? formatNumber(v * 1000) + " ms" : formatNumber(v) + " s";
    }
    const text = formatNumber(v);
    return unit && text !== "—" ? text + " " + unit : text;
  }

  /** Index of the first x >= value in a sorted array (its length if none). */
  function lowerBound(xs, value) {
    let lo = 0;
    let hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < value) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** [first, end) indices of the points within [x0, x1], one more on each side so a
   *  line reaches the chart's edges. */
  function visibleRange(xs, x0, x1) {
    return [Math.max(lowerBound(xs, x0) - 1, 0), Math.min(lowerBound(xs, x1) + 1, xs.length)];
  }

  /** [lo, hi] of the finite (positive, for log) y of the series within [x0, x1]. */
  function yExtent(seriesList, x0, x1, log, zero) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of seriesList) {
      const [a, b] = visibleRange(s.x, x0, x1);
      for (let i = a; i < b; i++) {
        const y = s.y[i];
        if (y === null || !isFinite(y) || (log && y <= 0)) continue;
        if (y < lo) lo = y;
        if (y > hi) hi = y;
      }
    }
    if (lo === Infinity) return log ? [1e-3, 1] : [0, 1];
    if (log) return [lo / 1.3, hi * 1.3];
    if (zero && lo > 0) lo = 0;
    if (hi === lo) {
      const pad = Math.abs(hi) * 0.05 || 1;
      return [lo - pad, hi + pad];
    }
    const pad = (hi - lo) * 0.06;
    return [zero && lo === 0 ? 0 : lo - pad, hi + pad];
  }

  /** SVG path data of one series over the visible range; gaps (null) break the line. */
  function pathData(series, x0, x1, toX, toY, log) {
    const [a, b] = visibleRange(series.x, x0, x1);
    const parts = [];
    let pen = "M";
    for (let i = a; i < b; i++) {
      const y = series.y[i];
      if (y === null || !isFinite(y) || (log && y <= 0)) {
        pen = "M";
        continue;
      }
      parts.push(pen + toX(series.x[i]).toFixed(1) + "," + toY(y).toFixed(1));
      pen = "L";
    }
    return parts.join("");
  }

  /** The point of a series nearest to x, as [x, y], or null. */
  function nearest(series, x) {
    if (!series.x.length) return null;
    const i = lowerBound(series.x, x);
    const candidates = [i - 1, i].filter((j) => j >= 0 && j < series.x.length);
    const j = candidates.reduce((best, k) =>
      Math.abs(series.x[k] - x) < Math.abs(series.x[best] - x) ? k : best
    );
    return [series.x[j], series.y[j]];
  }

  const helpers = { niceTicks, logTicks, formatNumber, formatValue, lowerBound, visibleRange,
    yExtent, pathData, nearest };
  if (typeof module !== "undefined" && module.exports) {
    module.exports = helpers;
    return;
  }

  /* ---- the page ------------------------------------------------------------------- */

  function element(name, attributes, parent) {
    const node = document.createElementNS(NS, name);
    for (const key in attributes) node.setAttribute(key, attributes[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function start() {
    const source = document.getElementById("soak-chart-data");
    const root = document.getElementById("soak-charts");
    if (!source || !root) return;
    const spec = JSON.parse(source.textContent);
    const full = [0, spec.x_end > 0 ? spec.x_end : 1];
    let view = full.slice();
    const charts = [];
    const formatX = (s) => formatNumber(s / spec.x_scale);

    function redraw() {
      for (const chart of charts) chart.draw();
    }
    function zoom(x0, x1) {
      view = x1 - x0 > 1e-6 ? [Math.max(x0, full[0]), Math.min(x1, full[1])] : full.slice();
      redraw();
    }
    function hover(x) {
      for (const chart of charts) chart.hover(x);
    }

    const reset = document.createElement("button");
    reset.type = "button";
    reset.textContent = "reset zoom";
    reset.className = "soak-reset";
    reset.addEventListener("click", () => zoom(full[0], full[1]));
    root.appendChild(reset);

    for (const chartSpec of spec.charts) {
      charts.push(makeChart(chartSpec));
    }
    redraw();

    function makeChart(chartSpec) {
      const box = document.createElement("figure");
      box.className = "soak-chart";
      box.id = "chart-" + chartSpec.id;
      const caption = document.createElement("figcaption");
      caption.textContent = chartSpec.title;
      box.appendChild(caption);
      const legend = document.createElement("div");
      legend.className = "soak-legend";
      box.appendChild(legend);
      const svg = element("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
        "aria-label": chartSpec.title });
      box.appendChild(svg);
      const tip = document.createElement("div");
      tip.className = "soak-tip";
      tip.hidden = true;
      box.appendChild(tip);
      root.appendChild(box);

      const clipId = "clip-" + chartSpec.id;
      const defs = element("defs", {}, svg);
      const clip = element("clipPath", { id: clipId }, defs);
      element("rect", { x: MARGIN.left, y: MARGIN.top, width: WIDTH - MARGIN.left - MARGIN.right,
        height: HEIGHT - MARGIN.top - MARGIN.bottom }, clip);
      const axes = element("g", { class: "soak-axes" }, svg);
      const plot = element("g", { "clip-path": `url(#${clipId})` }, svg);
      const cross = element("line", { class: "soak-cross", y1: MARGIN.top,
        y2: HEIGHT - MARGIN.bottom, visibility: "hidden" }, svg);
      const selection = element("rect", { class: "soak-selection", y: MARGIN.top,
        height: HEIGHT - MARGIN.top - MARGIN.bottom, visibility: "hidden" }, svg);

      const hidden = new Set();
      chartSpec.series.forEach((series, index) => {
        const item = document.createElement("button");
        item.type = "button";
        item.className = "soak-key";
        item.style.setProperty("--colour", series.colour);
        if (series.dash) item.classList.add("dashed");
        item.textContent = series.label;
        item.addEventListener("click", () => {
          if (hidden.has(index)) hidden.delete(index);
          else hidden.add(index);
          item.classList.toggle("off", hidden.has(index));
          draw();
        });
        legend.appendChild(item);
      });

      let toX = (x) => x;
      let fromX = (px) => px;
      let shown = [];

      function draw() {
        const [x0, x1] = view;
        const left = MARGIN.left;
        const right = WIDTH - MARGIN.right;
        const top = MARGIN.top;
        const bottom = HEIGHT - MARGIN.bottom;
        shown = chartSpec.series.filter((_, i) => !hidden.has(i));
        const [y0, y1] = yExtent(shown, x0, x1, chartSpec.log, chartSpec.zero);
        toX = (x) => left + ((x - x0) / (x1 - x0)) * (right - left);
        fromX = (px) => x0 + ((px - left) / (right - left)) * (x1 - x0);
        const toY = chartSpec.log
          ? (y) => bottom - ((Math.log10(y) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0))) * (bottom - top)
          : (y) => bottom - ((y - y0) / (y1 - y0)) * (bottom - top);
        axes.replaceChildren();
        plot.replaceChildren();
        for (const [spans, fill] of [[spec.idle, IDLE_FILL], [spec.saturated, SATURATED_FILL]]) {
          for (const [a, b] of spans) {
            if (b < x0 || a > x1) continue;
            const xa = toX(Math.max(a, x0));
            element("rect", { x: xa, y: top, width: Math.max(toX(Math.min(b, x1)) - xa, 1),
              height: bottom - top, fill }, plot);
          }
        }
        const yTicks = chartSpec.log ? logTicks(y0, y1) : niceTicks(y0, y1, 5);
        for (const v of yTicks) {
          const y = toY(v);
          element("line", { class: "soak-grid", x1: left, x2: right, y1: y, y2: y }, axes);
          const label = element("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, axes);
          label.textContent = formatValue(v, chartSpec.unit);
        }
        for (const v of niceTicks(x0 / spec.x_scale, x1 / spec.x_scale, 10)) {
          const x = toX(v * spec.x_scale);
          element("line", { class: "soak-grid", x1: x, x2: x, y1: top, y2: bottom }, axes);
          const label = element("text", { x, y: bottom + 16, "text-anchor": "middle" }, axes);
          label.textContent = formatNumber(v);
        }
        const xLabel = element("text", { x: right, y: HEIGHT - 2, "text-anchor": "end" }, axes);
        xLabel.textContent = spec.x_label;
        element("rect", { class: "soak-frame", x: left, y: top, width: right - left,
          height: bottom - top }, axes);
        for (const series of shown) {
          element("path", { d: pathData(series, x0, x1, toX, toY, chartSpec.log),
            stroke: series.colour, "stroke-dasharray": series.dash || "none",
            class: "soak-line" }, plot);
        }
      }

      function showHover(x) {
        if (x === null || x < view[0] || x > view[1]) {
          cross.setAttribute("visibility", "hidden");
          return;
        }
        const px = toX(x);
        cross.setAttribute("x1", px);
        cross.setAttribute("x2", px);
        cross.setAttribute("visibility", "visible");
      }

      function pointerX(event) {
        const rect = svg.getBoundingClientRect();
        return ((event.clientX - rect.left) / rect.width) * WIDTH;
      }

      let dragFrom = null;
      svg.addEventListener("mousedown", (event) => {
        dragFrom = pointerX(event);
        event.preventDefault();
      });
      svg.addEventListener("mousemove", (event) => {
        const px = pointerX(event);
        if (dragFrom !== null) {
          selection.setAttribute("x", Math.min(dragFrom, px));
          selection.setAttribute("width", Math.abs(px - dragFrom));
          selection.setAttribute("visibility", "visible");
        }
        const x = fromX(px);
        hover(x);
        const rows = shown.map((series) => {
          const point = nearest(series, x);
          return point ? `${series.label}: ${formatValue(point[1], chartSpec.unit)}` : null;
        }).filter(Boolean);
        tip.textContent = `${formatX(x)} ${spec.x_label.replace(/^elapsed /, "")}  ·  ${rows.join("  ·  ")}`;
        tip.hidden = false;
      });
      svg.addEventListener("mouseleave", () => {
        hover(null);
        tip.hidden = true;
        selection.setAttribute("visibility", "hidden");
        dragFrom = null;
      });
      svg.addEventListener("mouseup", (event) => {
        if (dragFrom === null) return;
        const px = pointerX(event);
        selection.setAttribute("visibility", "hidden");
        if (Math.abs(px - dragFrom) > 4) {
          const a = fromX(Math.min(dragFrom, px));
          const b = fromX(Math.max(dragFrom, px));
          zoom(a, b);
        }
        dragFrom = null;
      });
      svg.addEventListener("dblclick", () => zoom(full[0], full[1]));

      return { draw, hover: showHover };
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
