/* ctdid viewer: browse, compare, measure and pick DID candidates.
 *
 * Slices arrive as raw little-endian int16 HU; window/level is a lookup table from HU to grey
 * applied here, in the browser: grey = clip(floor((HU - low) * 255 / (high - low) + 0.5), 0, 255),
 * the same mapping as ctdid.io.png.window_to_uint8.  No build step, no dependencies.
 *
 * Smooth mode: the candidate slider moves over strength in SMOOTH_STEPS steps; the image is
 * the float32 blend of the two neighbouring candidates, as ctdid.core.candidates.interpolate,
 * windowed with the same mapping.  Picks and exports stay per stored candidate (the nearest).
 *
 * Previews: while a single-slice DID run fine-tunes, run.json lists pixel-blend previews; the
 * server gives each a key "p<id>" (never a candidate id) and view_order, candidates and
 * previews merged by strength.  The slider runs over view_order; a preview is labelled
 * "preview (blend)" and ticked under the slider.  When DID replaces a preview it leaves the
 * list and the slider moves to the entry nearest its strength.  Previews are not picked.
 *
 * On demand: while a volume's shared trajectory runs, run.json lists under "rendering" the
 * candidates whose weights exist but whose volume is not complete; the server renders each
 * slice asked for from the weights (the same id; it becomes a stored candidate later).  They are
 * labelled "rendered on demand" and cannot be picked until their volume is listed.
 */
(function () {
  "use strict";

  const PRESETS = {
    abdomen: [400, 40], liver: [150, 90], lung: [1500, -600], bone: [1800, 400], brain: [80, 40],
  };
  const PRESET_KEYS = ["abdomen", "liver", "lung", "bone", "brain"];
  const MAX_INFLIGHT = 6;
  const CACHE_BYTES = 384 * 1024 * 1024;
  const POLL_MS = 1000;
  const SMOOTH_STEPS = 200;
  const NATIVE_RANGE_KEYS = new Set([
    "ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "Home", "End",
  ]);

  const token = new URLSearchParams(location.search).get("token");
  const $ = (id) => document.getElementById(id);

  const S = {
    doc: null, status: "loading", order: [], records: new Map(), defaultId: null, nCand: 0,
    nz: 1, ny: 0, nx: 0, z: 0, idx: 0, curId: null,
    low: -160, high: 240, preset: "abdomen",
    lut: new Uint32Array(65536),
    compare: false, flip: false, flipRef: "input",
    zoom: 1, panX: 0, panY: 0,
    smooth: false, s: 0, blend: null,
    tool: "pan", rois: { A: null, B: null },
    cache: new Map(), queue: [], inflight: new Map(), cacheLimit: 64,
    views: [], picks: {},
    timings: [], firstPaintMs: null, drawCount: 0, errors: [],
  };

  /* ---------- network ---------- */

  function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({}, opts.headers || {});
    if (token) headers["X-CTDID-Token"] = token;
    return fetch(path, Object.assign({}, opts, { headers: headers, cache: "no-store" }));
  }

  async function postJSON(path, body) {
    const r = await api(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = { error: r.statusText }; }
    return { status: r.status, ok: r.ok, doc: doc };
  }

  function showError(title, message) {
    $("error").hidden = false;
    $("error-title").textContent = title;
    $("error-message").textContent = message;
  }
  function clearError() { $("error").hidden = true; }

  /* ---------- slice cache and loading ---------- */

  const key = (cand, z) => cand + ":" + z;

  function cached(cand, z) {
    const k = key(cand, z);
    const d = S.cache.get(k);
    if (d !== undefined) { S.cache.delete(k); S.cache.set(k, d); }
    return d;
  }

  function store(k, data) {
    S.cache.set(k, data);
    while (S.cache.size > S.cacheLimit) {
      const oldest = S.cache.keys().next().value;
      S.cache.delete(oldest);
    }
  }

  function want(cands, z, front) {
    const keys = [];
    for (const c of cands) {
      const k = key(c, z);
      if (!S.cache.has(k) && !S.inflight.has(k)) keys.push(k);
    }
    const rest = S.queue.filter((k) => keys.indexOf(k) < 0);
    S.queue = front ? keys.concat(rest) : rest.concat(keys);
    pump();
  }

  function pump() {
    while (S.inflight.size < MAX_INFLIGHT && S.queue.length) {
      const k = S.queue.shift();
      if (S.cache.has(k) || S.inflight.has(k)) continue;
      const sep = k.lastIndexOf(":");
      const cand = k.slice(0, sep);
      const z = Number(k.slice(sep + 1));
      const p = api("/api/slice/" + cand + "/" + z)
        .then(async (r) => {
          if (r.status === 404 && isPreview(cand) && !S.records.has(cand)) return; // replaced
          if (!r.ok) {
            if (r.status === 404 && isPreview(cand)) { schedulePoll(0); return; } // replaced
            let msg = r.statusText;
            try { msg = (await r.json()).error || msg; } catch (e) { /* keep */ }
            throw new Error("slice " + cand + "/" + z + ": " + msg);
          }
          const buf = await r.arrayBuffer();
          store(k, new Int16Array(buf));
          if (isVisible(cand, z)) render();
        })
        .catch((e) => { S.errors.push(String(e)); setStatusNote(String(e.message || e)); })
        .finally(() => { S.inflight.delete(k); pump(); });
      S.inflight.set(k, p);
    }
  }

  function isVisible(cand, z) {
    if (z !== S.z) return false;
    return S.views.some((v) => sourcesOf(v).some((c) => String(c) === String(cand)));
  }

  /* Candidates of the visible slice first (nearest the slider first), then neighbours. */
  function requestSlices() {
    if (!S.nx) return;
    const visible = [].concat(...S.views.map(sourcesOf)).filter((c) => c !== null);
    want(visible, S.z, true);
    const byDistance = S.order.slice().map((id, i) => [Math.abs(i - S.idx), id])
      .sort((a, b) => a[0] - b[0]).map((p) => p[1]);
    want(byDistance.concat(["input"]), S.z, false);
    if (S.nz > 1 && S.curId !== null) {
      const near = S.smooth ? blendIds() : [S.curId];
      for (let d = 1; d <= 2; d++) {
        if (S.z + d < S.nz) want(near, S.z + d, false);
        if (S.z - d >= 0) want(near, S.z - d, false);
      }
    }
  }

  /* ---------- window/level ---------- */

  function buildLut() {
    const lo = S.low, hi = S.high, range = hi - lo, lut = S.lut;
    for (let i = 0; i < 65536; i++) {
      // same operation order as window_to_uint8, so that ties round identically
      let g = Math.floor((i - 32768 - lo) * 255 / range + 0.5);
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      lut[i] = (0xff000000 | (g << 16) | (g << 8) | g) >>> 0;
    }
    const w = hi - lo, l = (hi + lo) / 2;
    $("readout-wl").textContent = "W " + fmt(w, 0) + " L " + fmt(l, 0) +
      " [" + fmt(lo, 0) + ", " + fmt(hi, 0) + "] HU" + (S.preset ? " (" + S.preset + ")" : "");
    document.querySelectorAll("#presets button").forEach((b) => {
      b.classList.toggle("active", b.dataset.preset === S.preset);
    });
  }

  function setWindow(width, level, preset) {
    width = Math.max(1, width);
    S.low = level - width / 2;
    S.high = level + width / 2;
    S.preset = preset || null;
    buildLut();
    render();
  }

  /* ---------- smooth strength: blend of the two neighbouring candidates ---------- */

  const GREY = new Uint32Array(256);
  for (let g = 0; g < 256; g++) GREY[g] = (0xff000000 | (g << 16) | (g << 8) | g) >>> 0;

  const strengthOf = (id) => S.records.get(id).strength;
  /* A preview's key ("p3"); candidate ids are numbers. */
  const isPreview = (id) => typeof id === "string" && /^p[0-9]+$/.test(id);
  const PREVIEW_LABEL = "preview (blend)";
  const ON_DEMAND_LABEL = "rendered on demand";
  const signed = (x) => (x >= 0 ? "+" : "") + fmt(x, 2);

  /* The candidates around strength s, as ctdid.core.candidates.interpolate: walk outward from
   * the default on the side of s; image = a + w * (b - a) with a the one nearer the default.
   * b === null: exactly candidate a (s is a stored strength, or beyond the last one). */
  function bracket(s) {
    const ids = S.order;
    if (!ids.length) return null;
    let d = ids.indexOf(S.defaultId);
    if (d < 0) { // no default yet: the candidate nearest strength 0
      d = 0;
      ids.forEach((id, i) => {
        if (Math.abs(strengthOf(id)) < Math.abs(strengthOf(ids[d]))) d = i;
      });
    }
    if (s === 0) return { a: ids[d], b: null, w: 0 };
    const side = s > 0 ? ids.slice(d) : ids.slice(0, d + 1).reverse();
    const x = Math.abs(s);
    let prev = side[0];
    for (const id of side.slice(1)) {
      const ac = Math.abs(strengthOf(id));
      if (ac >= x) {
        const ap = Math.abs(strengthOf(prev));
        if (ac === x || ac <= ap) return { a: id, b: null, w: 0 };
        return { a: prev, b: id, w: (x - ap) / (ac - ap) };
      }
      prev = id;
    }
    return { a: prev, b: null, w: 0 };
  }

  /* The stored candidate nearest strength s (picks and exports use it). */
  const nearestOf = (br) => (br.b === null || br.w <= 0.5 ? br.a : br.b);

  function blendIds() {
    const br = bracket(S.s);
    return br === null ? [] : br.b === null ? [br.a] : [br.a, br.b];
  }

  function strengthRange() {
    const n = S.order.length;
    return n ? [strengthOf(S.order[0]), strengthOf(S.order[n - 1])] : [0, 0];
  }

  function strengthAt(k) {
    const r = strengthRange();
    return r[1] > r[0] ? r[0] + k * (r[1] - r[0]) / SMOOTH_STEPS : r[0];
  }

  function stepOf(s) {
    const r = strengthRange();
    return r[1] > r[0] ? Math.round((s - r[0]) / (r[1] - r[0]) * SMOOTH_STEPS) : 0;
  }

  /* HU of strength S.s on slice S.z: a cached int16 slice where s is a stored candidate's,
   * else float32 a + float32(w) * (b - a), as ctdid.core.candidates.interpolate.  With `out`,
   * the windowed pixels are written in the same pass.  Returns [data, drawn into out]. */
  function blendSlice(out) {
    const br = bracket(S.s);
    const a = br === null ? undefined : cached(br.a, S.z);
    if (br === null || br.b === null || a === undefined) return [a, false];
    const b = cached(br.b, S.z);
    if (b === undefined) return [undefined, false];
    const m = S.blend, n = a.length;
    if (m && m.a === br.a && m.b === br.b && m.w === br.w && m.z === S.z && m.data.length === n) {
      return [m.data, false];
    }
    const data = m && m.data.length === n ? m.data : new Float32Array(n);
    const wf = Math.fround(br.w);
    if (out) {
      const lo = S.low, range = S.high - S.low;
      for (let i = 0; i < n; i++) {
        const x = Math.fround(a[i] + Math.fround(wf * (b[i] - a[i])));
        data[i] = x;
        const g = Math.floor((x - lo) * 255 / range + 0.5);
        out[i] = GREY[g < 0 ? 0 : g > 255 ? 255 : g];
      }
    } else {
      for (let i = 0; i < n; i++) data[i] = a[i] + Math.fround(wf * (b[i] - a[i]));
    }
    S.blend = { a: br.a, b: br.b, w: br.w, z: S.z, data: data };
    return [data, !!out];
  }

  /* ---------- views ---------- */

  function makeView(role) {
    const el = document.createElement("div");
    el.className = "view";
    el.dataset.role = role;
    el.innerHTML = '<div class="stage"><canvas></canvas>' +
      '<svg xmlns="http://www.w3.org/2000/svg"></svg></div>' +
      '<div class="label"></div><div class="loading"></div>';
    const canvas = el.querySelector("canvas");
    const v = {
      role: role, el: el, stage: el.querySelector(".stage"), canvas: canvas,
      ctx: canvas.getContext("2d", { alpha: false }), svg: el.querySelector("svg"),
      label: el.querySelector(".label"), loading: el.querySelector(".loading"),
      image: null, u32: null, shown: null,
    };
    attachPointer(v);
    return v;
  }

  const isBlendView = (v) => S.smooth && v.role === "current" && !S.flip && S.order.length > 0;

  /* The candidates a view needs: two for a blend. */
  const sourcesOf = (v) => (isBlendView(v) ? blendIds() : [sourceOf(v)]);

  /* HU shown by a view: a cached int16 slice or, in smooth mode, the float32 blend. */
  function viewData(v) {
    if (isBlendView(v)) return blendSlice(null)[0];
    const cand = sourceOf(v);
    return cand === null ? undefined : cached(cand, S.z);
  }

  function sourceOf(v) {
    if (v.role === "input") return "input";
    if (v.role === "default") return S.defaultId;
    if (S.flip) return S.flipRef === "input" ? "input" : S.defaultId;
    return S.curId === null ? "input" : S.curId;
  }

  function layoutViews() {
    const roles = S.compare ? ["input", "default", "current"] : ["current"];
    const box = $("views");
    if (S.views.length !== roles.length || S.views.some((v, i) => v.role !== roles[i])) {
      box.innerHTML = "";
      S.views = roles.map(makeView);
      S.views.forEach((v) => box.appendChild(v.el));
    }
    S.views.forEach((v) => {
      if (v.canvas.width !== S.nx || v.canvas.height !== S.ny) {
        v.canvas.width = S.nx;
        v.canvas.height = S.ny;
        v.image = null;
      }
      v.svg.setAttribute("viewBox", "0 0 " + S.nx + " " + S.ny);
      v.el.classList.toggle("pan", S.tool === "pan");
    });
    applyTransform();
  }

  function viewScale(v) {
    const w = v.el.clientWidth, h = v.el.clientHeight;
    const fit = Math.min(w / S.nx, h / S.ny);
    return { s: fit * S.zoom, w: w, h: h };
  }

  function applyTransform() {
    for (const v of S.views) {
      if (!S.nx) continue;
      const t = viewScale(v);
      const tx = (t.w - S.nx * t.s) / 2 + S.panX;
      const ty = (t.h - S.ny * t.s) / 2 + S.panY;
      v.stage.style.width = S.nx + "px";
      v.stage.style.height = S.ny + "px";
      v.stage.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + t.s + ")";
    }
  }

  function toImage(v, ev) {
    const r = v.canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) / r.width * S.nx, (ev.clientY - r.top) / r.height * S.ny];
  }

  /* ---------- drawing ---------- */

  function drawView(v) {
    const blend = isBlendView(v);
    const cand = blend ? null : sourceOf(v);
    v.label.textContent = blend ? "strength " + signed(S.s) : labelOf(v, cand);
    const previewShown = blend ? blendIds().some(isPreview) : isPreview(cand);
    if (blend && previewShown) v.label.textContent += " · " + PREVIEW_LABEL;
    v.label.classList.toggle("preview", previewShown);
    if (v.image === null) {
      v.image = v.ctx.createImageData(S.nx, S.ny);
      v.u32 = new Uint32Array(v.image.data.buffer);
    }
    let data, drawn = false;
    if (blend) [data, drawn] = blendSlice(v.u32);
    else data = cand === null ? undefined : cached(cand, S.z);
    if (data === undefined) {
      v.loading.textContent = !blend && cand === null ? "no candidate yet" : "loading…";
      return false;
    }
    v.loading.textContent = "";
    if (!drawn) paint(data, v.u32);
    v.ctx.putImageData(v.image, 0, 0);
    const ids = blend ? blendIds() : [cand];
    v.shown = ids.length === 1 ? String(ids[0]) : "blend " + ids.join(" ");
    v.canvas.dataset.shown = v.shown;
    return true;
  }

  /* Window HU to pixels: the lookup table for int16, the same formula for float32 blends. */
  function paint(data, out) {
    const n = data.length;
    if (data instanceof Int16Array) {
      const lut = S.lut;
      for (let i = 0; i < n; i++) out[i] = lut[data[i] + 32768];
      return;
    }
    const lo = S.low, range = S.high - S.low;
    for (let i = 0; i < n; i++) {
      const g = Math.floor((data[i] - lo) * 255 / range + 0.5);
      out[i] = GREY[g < 0 ? 0 : g > 255 ? 255 : g];
    }
  }

  function labelOf(v, cand) {
    if (cand === "input") return "input";
    if (cand === null) return v.role;
    const i = S.order.indexOf(cand);
    const tag = cand === S.defaultId ? "default"
      : isPreview(cand) ? PREVIEW_LABEL : "candidate " + (i + 1);
    return (v.role === "current" && !S.flip ? "" : v.role + ": ") + tag;
  }

  function render() {
    if (!S.nx) return false;
    let all = true;
    for (const v of S.views) all = drawView(v) && all;
    if (all && S.firstPaintMs === null) {
      S.firstPaintMs = performance.now();
      document.body.dataset.firstPaint = String(S.firstPaintMs);
    }
    S.drawCount++;
    updateRoiStats();
    return all;
  }

  /* ---------- candidate and slice selection ---------- */

  function setIndex(i, timed) {
    const n = S.order.length;
    if (!n) return;
    i = Math.max(0, Math.min(n - 1, i | 0));
    if (S.smooth) { setStrength(strengthOf(S.order[i]), timed); return; }
    const t0 = performance.now();
    S.idx = i;
    S.curId = S.order[i];
    showCurrent(t0, timed);
  }

  /* Draw the current candidate (or blend) and update the rest of the page; with `timed`, the
   * time from t0 to the drawn frame is recorded (the slider benchmark reads it). */
  function showCurrent(t0, timed) {
    syncSlider();
    const drawn = render();
    const t1 = performance.now();
    if (timed && drawn) S.timings.push(t1 - t0);
    updateInfo();
    requestSlices();
  }

  /* Smooth mode: show strength s (clamped to the stored range); the nearest stored candidate
   * becomes the current one for picks, exports, the tradeoff plot and prefetching. */
  function setStrength(s, timed) {
    s = Number(s);
    if (!S.order.length || !isFinite(s)) return;
    const r = strengthRange();
    s = Math.max(r[0], Math.min(r[1], s));
    const t0 = performance.now();
    S.s = s;
    S.curId = nearestOf(bracket(s));
    S.idx = S.order.indexOf(S.curId);
    showCurrent(t0, timed);
  }

  /* One step of the slider: a fine strength step in smooth mode, else the next candidate. */
  function stepCandidate(dir, timed) {
    if (S.smooth) setStrength(strengthAt(stepOf(S.s) + dir), timed);
    else setIndex(S.idx + dir, timed);
  }

  function syncSlider() {
    const slider = $("cand-slider"), n = S.order.length;
    slider.max = String(S.smooth ? (n > 1 ? SMOOTH_STEPS : 0) : Math.max(0, n - 1));
    slider.value = String(S.smooth ? stepOf(S.s) : S.idx);
  }

  function setSmooth(on) {
    S.smooth = !!on;
    $("smooth").checked = S.smooth;
    $("btn-pick").textContent = S.smooth ? "pick the nearest stored candidate" : "pick this candidate";
    S.blend = null;
    if (S.smooth && S.curId !== null) setStrength(strengthOf(S.curId), false);
    else if (S.order.length) setIndex(S.idx, false);
    else syncSlider();
  }

  function setSlice(z) {
    z = Math.max(0, Math.min(S.nz - 1, z | 0));
    if (z === S.z) return;
    S.z = z;
    $("slice-slider").value = String(z);
    $("slice-index").textContent = (z + 1) + " / " + S.nz;
    requestSlices();
    render();
  }


  // Which method made a candidate (run.json's curve: --method auto can mix methods by side).
  function madeBy(rec) {
    const c = S.curve;
    if (!c || rec.direction === "default") return "";
    const m = c[rec.direction];
    return m ? " · made by " + (m === "did" ? "DID" : m) : "";
  }
  function updateInfo() {
    const n = S.order.length;
    const rec = S.records.get(S.curId);
    const what = rec && rec.preview ? PREVIEW_LABEL : "candidate";
    $("cand-index").textContent = n ? what + " " + (S.idx + 1) + " / " + n : "no candidates yet";
    if (n && S.smooth) {
      const br = bracket(S.s);
      const pos = (id) => S.order.indexOf(id) + 1;
      $("cand-index").textContent = "strength " + signed(S.s) + (br.b === null
        ? " (candidate " + pos(br.a) + " / " + n + ")"
        : " (between candidate " + Math.min(pos(br.a), pos(br.b)) + " and " +
          Math.max(pos(br.a), pos(br.b)) + ")");
    }
    $("cand-index").dataset.index = String(S.idx);
    $("cand-index").dataset.preview = rec && rec.preview ? "true" : "";
    $("cand-index").dataset.rendering = rec && rec.rendering ? "true" : "";
    $("cand-index").dataset.strength = S.smooth ? String(S.s) : "";
    if (rec) {
      $("cand-info").textContent = rec.preview
        ? (S.smooth ? "nearest: " : "") + PREVIEW_LABEL + " · " + rec.key + " · " +
          rec.direction + " · strength " + signed(rec.strength) +
          " · pixel blend shown until DID's candidates replace it"
        : (S.smooth ? "nearest stored: " : "") + "id " + rec.id + " · " + rec.direction +
          " · strength " + signed(rec.strength) + " · step " + rec.step + madeBy(rec) +
          (rec.rendering ? " · " + ON_DEMAND_LABEL + " from its weights (volume not complete; " +
            "strength on the training slices)" : "");
      $("cand-info").classList.toggle("preview", !!rec.preview);
      const L = rec.labels || {};
      const parts = [];
      if (L.noise_hu !== undefined) parts.push("noise " + fmt(L.noise_hu, 1) + " HU");
      if (L.transfer50_per_mm !== undefined) {
        parts.push("f50 " + fmt(L.transfer50_per_mm, 3) + " /mm");
      }
      if (L.mtf50_per_mm !== undefined) parts.push("MTF50 " + fmt(L.mtf50_per_mm, 3) + " /mm");
      const shown = ["noise_hu", "transfer50_per_mm", "mtf50_per_mm"];
      for (const k of Object.keys(L)) {
        if (!shown.includes(k)) parts.push(k + " " + fmt(L[k], 3));
      }
      $("cand-labels").textContent = parts.length ? parts.join(" · ")
        : rec.preview ? "no labels (a preview)"
        : rec.rendering ? "no labels yet (labelled when its volume is complete)" : "no labels";
    } else {
      $("cand-info").textContent = "–";
      $("cand-labels").textContent = "–";
    }
    const mark = $("default-mark");
    const di = S.order.indexOf(S.defaultId);
    mark.hidden = di < 0;
    if (di >= 0) {
      const r = strengthRange();
      let frac = n > 1 ? di / (n - 1) : 0.5;
      if (S.smooth && r[1] > r[0]) frac = (strengthOf(S.defaultId) - r[0]) / (r[1] - r[0]);
      mark.style.left = sliderLeft(frac);
    }
    drawPreviewTicks();
    drawTradeoff();
  }

  /* CSS left of a point at fraction frac along the slider (the thumb is 16 px wide). */
  const sliderLeft = (frac) => "calc(" + (frac * 100) + "% + " + (8 - 16 * frac) + "px)";

  /* A tick under the slider for each preview, where the slider shows it. */
  function drawPreviewTicks() {
    const box = $("preview-ticks");
    const n = S.order.length, r = strengthRange();
    const previews = S.order.map((id, i) => [id, i]).filter((p) => isPreview(p[0]));
    box.innerHTML = "";
    for (const [id, i] of previews) {
      let frac = n > 1 ? i / (n - 1) : 0.5;
      if (S.smooth && r[1] > r[0]) frac = (strengthOf(id) - r[0]) / (r[1] - r[0]);
      const t = document.createElement("div");
      t.className = "preview-tick" + (id === S.curId ? " current" : "");
      t.style.left = sliderLeft(frac);
      t.dataset.key = id;
      t.title = PREVIEW_LABEL + " " + id + ", strength " + signed(strengthOf(id));
      box.appendChild(t);
    }
    box.dataset.count = String(previews.length);
    $("preview-legend").hidden = !previews.length;
  }

  function fmt(x, d) {
    return typeof x === "number" && isFinite(x) ? x.toFixed(d) : "–";
  }

  /* ---------- tradeoff plot ---------- */

  function drawTradeoff() {
    const svg = $("tradeoff");
    const W = 260, H = 180, m = { l: 38, r: 8, t: 8, b: 28 };
    // resolution axis: f50 of the transfer from the input when measured, else skin-edge MTF50
    const labelsOf = (id) => (S.records.get(id) || {}).labels || {};
    const useF50 = S.order.some((id) => isFinite(labelsOf(id).transfer50_per_mm));
    const key = useF50 ? "transfer50_per_mm" : "mtf50_per_mm";
    const pts = [];
    S.order.forEach((id, i) => {
      const L = labelsOf(id);
      if (isFinite(L.noise_hu) && isFinite(L[key])) {
        pts.push({ id: id, i: i, x: L[key], y: L.noise_hu });
      }
    });
    const ns = "http://www.w3.org/2000/svg";
    svg.innerHTML = "";
    const el = (tag, attrs, text) => {
      const e = document.createElementNS(ns, tag);
      for (const a in attrs) e.setAttribute(a, attrs[a]);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    if (!pts.length) {
      el("text", { x: 10, y: H / 2 }, "no noise / resolution labels");
      return;
    }
    let x0 = Math.min(...pts.map((p) => p.x)), x1 = Math.max(...pts.map((p) => p.x));
    let y0 = Math.min(...pts.map((p) => p.y)), y1 = Math.max(...pts.map((p) => p.y));
    if (x1 - x0 < 1e-9) { x0 -= 0.05; x1 += 0.05; }
    if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
    const X = (x) => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
    const Y = (y) => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);
    el("line", { class: "axis", x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b });
    el("line", { class: "axis", x1: m.l, y1: m.t, x2: m.l, y2: H - m.b });
    el("text", { x: m.l, y: H - m.b + 11 }, fmt(x0, 2));
    el("text", { x: W - m.r, y: H - m.b + 11, "text-anchor": "end" }, fmt(x1, 2));
    el("text", { x: (W + m.l) / 2, y: H - 4, "text-anchor": "middle" },
      useF50 ? "f50 of transfer from input (1/mm)" : "MTF50 (1/mm)");
    el("text", { x: m.l - 3, y: H - m.b, "text-anchor": "end" }, fmt(y0, 1));
    el("text", { x: m.l - 3, y: m.t + 8, "text-anchor": "end" }, fmt(y1, 1));
    el("text", { x: 10, y: (H - m.b + m.t) / 2, transform: "rotate(-90 10 " +
      ((H - m.b + m.t) / 2) + ")", "text-anchor": "middle" }, "noise (HU)");
    el("polyline", { class: "line", points: pts.map((p) => X(p.x) + "," + Y(p.y)).join(" ") });
    for (const p of pts) {
      const cls = "pt" + (p.id === S.defaultId ? " default" : "") +
        (p.id === S.curId ? " current" : "");
      const c = el("circle", { class: cls, cx: X(p.x), cy: Y(p.y), r: p.id === S.curId ? 5 : 3.5 });
      c.dataset.index = String(p.i);
      c.addEventListener("click", () => setIndex(p.i, false));
    }
  }

  /* ---------- ROI ---------- */

  function roiStats(data, roi) {
    if (!data || !roi) return null;
    const xa = Math.min(roi.x0, roi.x1), xb = Math.max(roi.x0, roi.x1);
    const ya = Math.min(roi.y0, roi.y1), yb = Math.max(roi.y0, roi.y1);
    const i0 = Math.max(0, Math.floor(xa - 0.5)), i1 = Math.min(S.nx - 1, Math.ceil(xb));
    const j0 = Math.max(0, Math.floor(ya - 0.5)), j1 = Math.min(S.ny - 1, Math.ceil(yb));
    const rx = (xb - xa) / 2, ry = (yb - ya) / 2, cx = xa + rx, cy = ya + ry;
    const circle = roi.shape === "circle";
    if (circle && (rx <= 0 || ry <= 0)) return { n: 0, mean: NaN, std: NaN };
    const inside = (i, j) => {
      const px = i + 0.5, py = j + 0.5;
      if (!circle) return px >= xa && px <= xb && py >= ya && py <= yb;
      const u = (px - cx) / rx, w = (py - cy) / ry;
      return u * u + w * w <= 1;
    };
    let n = 0, sum = 0;
    for (let j = j0; j <= j1; j++) {
      for (let i = i0; i <= i1; i++) if (inside(i, j)) { n++; sum += data[j * S.nx + i]; }
    }
    if (!n) return { n: 0, mean: NaN, std: NaN };
    const mean = sum / n;
    let ss = 0;
    for (let j = j0; j <= j1; j++) {
      for (let i = i0; i <= i1; i++) {
        if (inside(i, j)) { const d = data[j * S.nx + i] - mean; ss += d * d; }
      }
    }
    return { n: n, mean: mean, std: Math.sqrt(ss / n) };
  }

  function updateRoiStats() {
    const cand = S.curId === null ? "input" : S.curId;
    const data = S.smooth && S.order.length ? blendSlice(null)[0] : cached(cand, S.z);
    const st = {};
    for (const name of ["A", "B"]) {
      const roi = S.rois[name];
      const el = $("roi-" + name.toLowerCase());
      const s = roiStats(data, roi);
      st[name] = s;
      if (!roi) el.textContent = name + ": –";
      else if (!s) el.textContent = name + ": loading…";
      else {
        el.textContent = name + ": mean " + fmt(s.mean, 2) + " HU · STD " + fmt(s.std, 2) +
          " HU · N " + s.n;
      }
      if (s) { el.dataset.mean = String(s.mean); el.dataset.std = String(s.std); el.dataset.n = String(s.n); }
    }
    const a = st.A, b = st.B;
    let cnr = NaN;
    if (a && b && a.n && b.n && a.std + b.std > 0) {
      cnr = 2 * Math.abs(a.mean - b.mean) / (a.std + b.std);
    }
    $("roi-cnr").textContent = "CNR: " + fmt(cnr, 2) +
      (isFinite(cnr) ? "  (2|mean A − mean B| / (STD A + STD B), as Bai et al.)" : "");
    $("roi-cnr").dataset.cnr = String(cnr);
    S.lastRoi = st;
    drawRois();
  }

  function drawRois() {
    const ns = "http://www.w3.org/2000/svg";
    for (const v of S.views) {
      v.svg.innerHTML = "";
      for (const name of ["A", "B"]) {
        const r = S.rois[name];
        if (!r) continue;
        const xa = Math.min(r.x0, r.x1), xb = Math.max(r.x0, r.x1);
        const ya = Math.min(r.y0, r.y1), yb = Math.max(r.y0, r.y1);
        const color = name === "A" ? "#ffd54f" : "#80cbc4";
        let e;
        if (r.shape === "circle") {
          e = document.createElementNS(ns, "ellipse");
          e.setAttribute("cx", (xa + xb) / 2); e.setAttribute("cy", (ya + yb) / 2);
          e.setAttribute("rx", (xb - xa) / 2); e.setAttribute("ry", (yb - ya) / 2);
        } else {
          e = document.createElementNS(ns, "rect");
          e.setAttribute("x", xa); e.setAttribute("y", ya);
          e.setAttribute("width", xb - xa); e.setAttribute("height", yb - ya);
        }
        e.setAttribute("fill", "none");
        e.setAttribute("stroke", color);
        e.setAttribute("stroke-width", "1.5");
        e.setAttribute("vector-effect", "non-scaling-stroke");
        v.svg.appendChild(e);
        const t = document.createElementNS(ns, "text");
        t.setAttribute("x", xa); t.setAttribute("y", ya - 2);
        t.setAttribute("fill", color); t.setAttribute("font-size", Math.max(6, S.nx / 40));
        t.textContent = name;
        v.svg.appendChild(t);
      }
    }
  }

  /* ---------- pointer: pan, ROI, window/level, HU readout ---------- */

  function attachPointer(v) {
    let drag = null;
    v.el.addEventListener("contextmenu", (e) => e.preventDefault());
    v.el.addEventListener("pointerdown", (e) => {
      v.el.setPointerCapture(e.pointerId);
      const focused = document.activeElement;
      if (focused && focused !== document.body && focused.blur) focused.blur();
      const p = toImage(v, e);
      if (e.button === 2) {
        drag = { kind: "wl", x: e.clientX, y: e.clientY, w: S.high - S.low, l: (S.high + S.low) / 2 };
      } else if (e.button === 1 || (e.button === 0 && S.tool === "pan")) {
        drag = { kind: "pan", x: e.clientX, y: e.clientY, px: S.panX, py: S.panY };
      } else if (e.button === 0) {
        const name = e.shiftKey ? "B" : "A";
        S.rois[name] = { shape: S.tool, x0: p[0], y0: p[1], x1: p[0], y1: p[1] };
        drag = { kind: "roi", name: name };
      }
      e.preventDefault();
    });
    v.el.addEventListener("pointermove", (e) => {
      readPixel(v, e);
      if (!drag) return;
      if (drag.kind === "wl") {
        const w = drag.w * Math.exp((e.clientX - drag.x) / 200);
        const l = drag.l + (e.clientY - drag.y) * drag.w / 400;
        setWindow(w, l, null);
      } else if (drag.kind === "pan") {
        S.panX = drag.px + e.clientX - drag.x;
        S.panY = drag.py + e.clientY - drag.y;
        applyTransform();
      } else if (drag.kind === "roi") {
        const p = toImage(v, e);
        const r = S.rois[drag.name];
        r.x1 = Math.max(0, Math.min(S.nx, p[0]));
        r.y1 = Math.max(0, Math.min(S.ny, p[1]));
        r.x0 = Math.max(0, Math.min(S.nx, r.x0));
        r.y0 = Math.max(0, Math.min(S.ny, r.y0));
        updateRoiStats();
      }
    });
    const end = () => { drag = null; };
    v.el.addEventListener("pointerup", end);
    v.el.addEventListener("pointercancel", end);
    v.el.addEventListener("pointerleave", () => { $("readout-pixel").textContent = "–"; });
    v.el.addEventListener("wheel", (e) => {
      e.preventDefault();
      const dir = e.deltaY > 0 ? 1 : e.deltaY < 0 ? -1 : 0;
      if (!dir) return;
      if (e.ctrlKey || e.metaKey) zoomAt(v, e, dir < 0 ? 1.25 : 0.8);
      else if (S.nz > 1 && !e.shiftKey) setSlice(S.z + dir);
      else stepCandidate(dir, true);
    }, { passive: false });
  }

  function zoomAt(v, e, factor) {
    const t = viewScale(v);
    const r = v.el.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    const tx = (t.w - S.nx * t.s) / 2 + S.panX, ty = (t.h - S.ny * t.s) / 2 + S.panY;
    const ix = (mx - tx) / t.s, iy = (my - ty) / t.s;
    const fit = t.s / S.zoom;
    S.zoom = Math.max(0.25, Math.min(32, S.zoom * factor));
    const ns = fit * S.zoom;
    S.panX = mx - ix * ns - (t.w - S.nx * ns) / 2;
    S.panY = my - iy * ns - (t.h - S.ny * ns) / 2;
    applyTransform();
  }

  function readPixel(v, e) {
    const p = toImage(v, e);
    const i = Math.floor(p[0]), j = Math.floor(p[1]);
    const out = $("readout-pixel");
    if (i < 0 || j < 0 || i >= S.nx || j >= S.ny) { out.textContent = "–"; return; }
    const data = viewData(v);
    const val = data ? data[j * S.nx + i] : undefined;
    const hu = !data ? "…" : data instanceof Int16Array ? String(val) : fmt(val, 1);
    out.textContent = "x " + i + " y " + j + (S.nz > 1 ? " z " + S.z : "") + ": " + hu + " HU";
    out.dataset.hu = data ? String(val) : "";
  }

  /* ---------- result document ---------- */

  function applyDoc(doc) {
    const first = S.doc === null;
    S.doc = doc;
    S.status = doc.status;
    const prevRec = S.records.get(S.curId);
    S.records = new Map((doc.candidates || []).map((c) => [c.id, c]));
    for (const p of doc.previews || []) S.records.set(p.key, Object.assign({}, p, { preview: true }));
    for (const c of doc.rendering || []) {
      if (!S.records.has(c.id)) S.records.set(c.id, Object.assign({}, c, { rendering: true }));
    }
    S.nCand = (doc.candidates || []).length;
    S.order = (doc.view_order || doc.order || []).filter((id) => S.records.has(id));
    forgetReplaced();
    S.defaultId = doc.default_candidate !== undefined && doc.default_candidate !== null
      ? doc.default_candidate : null;
    S.picks = doc.picks || {};
    S.curve = doc.curve || null;
    const shape = doc.shape_zyx || [1, 0, 0];
    if (first) {
      S.nz = shape[0]; S.ny = shape[1]; S.nx = shape[2];
      S.z = Math.floor(S.nz / 2);
      S.cacheLimit = Math.max(16, Math.floor(CACHE_BYTES / Math.max(1, S.nx * S.ny * 2)));
      $("result-name").textContent = doc.result_name || "";
      $("slice-slider").max = String(S.nz - 1);
      $("slice-slider").value = String(S.z);
      $("slice-index").textContent = (S.z + 1) + " / " + S.nz;
      $("slice-row").hidden = S.nz < 2;
      layoutViews();
    }
    // keep the shown candidate; start at the default one
    let id = S.curId;
    if (id !== null && !S.records.has(id) && prevRec && S.order.length) {
      id = nearestEntry(prevRec.strength); // a replaced preview: the entry nearest it
    } else if (id === null || !S.records.has(id)) id = S.defaultId !== null ? S.defaultId : null;
    let idx = id === null ? Math.floor((S.order.length - 1) / 2) : S.order.indexOf(id);
    if (idx < 0) idx = 0;
    const badge = $("run-status");
    const n = S.order.length;
    const np = n - S.order.filter((e) => !isPreview(e)).length;
    const nr = S.order.filter((e) => (S.records.get(e) || {}).rendering).length;
    badge.textContent = S.status + " · " + S.nCand +
      (S.status === "running" ? " candidates so far" : " candidates") +
      (np ? " + " + np + " previews" : "") + (nr ? " + " + nr + " " + ON_DEMAND_LABEL : "");
    badge.className = "badge " + S.status;
    const od = doc.on_demand || {};
    badge.title = od.reason ? "slices are not rendered on demand: " + od.reason : "";
    if (S.status === "failed") showError("The run failed", doc.error || "see run.json");
    showPicks();
    if (n) {
      S.idx = idx; S.curId = S.order[idx];
      if (S.smooth) {
        const r = strengthRange();
        S.s = Math.max(r[0], Math.min(r[1], S.s));
        S.curId = nearestOf(bracket(S.s));
        S.idx = S.order.indexOf(S.curId);
      }
    }
    syncSlider();
    updateInfo();
    requestSlices();
    render();
  }

  /* Entries of the slider nearest strength s: a candidate before a preview at equal distance. */
  function nearestEntry(s) {
    let best = null, bd = Infinity;
    for (const id of S.order) {
      const d = Math.abs(strengthOf(id) - s) + (isPreview(id) ? 1e-9 : 0);
      if (d < bd) { bd = d; best = id; }
    }
    return best;
  }

  /* Cached slices and queued requests of previews no longer listed go. */
  function forgetReplaced() {
    const gone = (k) => {
      const c = k.slice(0, k.lastIndexOf(":"));
      return isPreview(c) && !S.records.has(c);
    };
    for (const k of Array.from(S.cache.keys())) if (gone(k)) S.cache.delete(k);
    S.queue = S.queue.filter((k) => !gone(k));
    if (S.blend && (!S.records.has(S.blend.a) || !S.records.has(S.blend.b))) S.blend = null;
  }

  async function loadResult() {
    let r;
    try {
      r = await api("/api/result");
    } catch (e) {
      showError("The viewer server does not answer", String(e));
      return null;
    }
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = { error: r.statusText }; }
    if (!r.ok) {
      showError("Cannot load the result (" + r.status + ")", doc.error || r.statusText);
      $("run-status").textContent = "error";
      $("run-status").className = "badge failed";
      return null;
    }
    if (S.status !== "failed") clearError();
    applyDoc(doc);
    return doc;
  }

  let pollTimer = null, polling = false;

  async function poll() {
    pollTimer = null;
    polling = true;
    let doc = null;
    try { doc = await loadResult(); } finally { polling = false; }
    if (doc === null || doc.status === "running") schedulePoll(doc === null ? 2 * POLL_MS : POLL_MS);
  }

  /* Poll again after ms (sooner than planned, e.g. when a preview answers 404). */
  function schedulePoll(ms) {
    if (polling) return;
    if (pollTimer !== null) clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }

  /* ---------- pick and export ---------- */

  function setStatusNote(text) { $("pick-status").textContent = text; }

  function showPicks() {
    const ul = $("picks");
    ul.innerHTML = "";
    for (const task of Object.keys(S.picks)) {
      const p = S.picks[task];
      const li = document.createElement("li");
      li.textContent = task + ": candidate id " + p.candidate + " (strength " +
        fmt(p.strength, 2) + ")";
      ul.appendChild(li);
    }
  }

  async function pick() {
    const task = $("task").value.trim();
    if (!task) { setStatusNote("name the task first"); return null; }
    if (S.curId === null) { setStatusNote("no candidate to pick yet"); return null; }
    if (isPreview(S.curId)) {
      setStatusNote("this is a " + PREVIEW_LABEL + ", shown until DID's candidates replace it; " +
        "previews cannot be picked or exported: pick a DID candidate");
      return null;
    }
    if ((S.records.get(S.curId) || {}).rendering) {
      setStatusNote("candidate " + S.curId + " is " + ON_DEMAND_LABEL + " while its volume is " +
        "made; pick it once the volume is complete");
      return null;
    }
    const id = S.curId;
    const note = S.smooth ? " (the stored candidate nearest strength " + signed(S.s) +
      "; blends are not stored)" : "";
    const r = await postJSON("/api/picks", { candidate: id, task: task });
    if (!r.ok) { setStatusNote("pick failed: " + (r.doc.error || r.status)); return null; }
    S.picks = r.doc.picks || {};
    showPicks();
    setStatusNote("picked candidate id " + id + " for “" + task + "”" + note);
    return id;
  }

  async function exportPick(format) {
    const task = $("task").value.trim();
    let cand = S.picks[task] ? S.picks[task].candidate : null;
    if (cand === null) cand = await pick();
    if (cand === null) return;
    setStatusNote("exporting " + format + "…");
    const body = { candidate: cand, format: format, task: task, window: [S.low, S.high] };
    let r = await postJSON("/api/export", body);
    if (r.status === 409 && window.confirm(r.doc.error + "\nReplace it?")) {
      body.overwrite = true;
      r = await postJSON("/api/export", body);
    }
    if (!r.ok) { setStatusNote("export failed: " + (r.doc.error || r.status)); return; }
    setStatusNote("exported candidate id " + cand + " to " + r.doc.written.join(", ") +
      (S.smooth ? " (a stored candidate: smooth blends are not exported)" : ""));
    $("pick-status").dataset.written = r.doc.written.join("\n");
  }

  /* ---------- wiring ---------- */

  function setCompare(on) {
    S.compare = on;
    $("btn-compare").classList.toggle("active", on);
    layoutViews();
    requestSlices();
    render();
  }

  function setFlip(on) {
    S.flip = on;
    $("btn-flip").classList.toggle("active", on);
    requestSlices();
    render();
  }

  function resetView() { S.zoom = 1; S.panX = 0; S.panY = 0; applyTransform(); }

  function wire() {
    const slider = $("cand-slider");
    slider.addEventListener("input", () => {
      if (S.smooth) setStrength(strengthAt(Number(slider.value)), true);
      else setIndex(Number(slider.value), true);
    });
    slider.addEventListener("wheel", (e) => {
      e.preventDefault();
      if (e.deltaY) stepCandidate(e.deltaY > 0 ? 1 : -1, true);
    }, { passive: false });
    $("smooth").checked = S.smooth;
    $("smooth").addEventListener("change", (e) => setSmooth(e.target.checked));
    $("slice-slider").addEventListener("input", (e) => setSlice(Number(e.target.value)));
    $("default-mark").addEventListener("click", () => setIndex(S.order.indexOf(S.defaultId), false));
    document.querySelectorAll("#presets button").forEach((b) => {
      b.addEventListener("click", () => {
        const p = PRESETS[b.dataset.preset];
        setWindow(p[0], p[1], b.dataset.preset);
      });
    });
    $("btn-compare").addEventListener("click", () => setCompare(!S.compare));
    $("btn-flip").addEventListener("click", () => setFlip(!S.flip));
    $("flip-ref").addEventListener("change", (e) => { S.flipRef = e.target.value; render(); });
    $("btn-reset").addEventListener("click", resetView);
    document.querySelectorAll("input[name=tool]").forEach((r) => {
      r.addEventListener("change", () => { S.tool = r.value; layoutViews(); });
    });
    $("btn-clear-roi").addEventListener("click", () => {
      S.rois = { A: null, B: null };
      updateRoiStats();
    });
    $("btn-pick").addEventListener("click", pick);
    document.querySelectorAll("button.export").forEach((b) => {
      b.addEventListener("click", () => exportPick(b.dataset.format));
    });
    window.addEventListener("resize", applyTransform);
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      if (t && (t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
      if (t && t.tagName === "INPUT") {
        if (t.type !== "range" && t.type !== "radio" && t.type !== "checkbox") return; // a task name
        if (t.type === "range" && NATIVE_RANGE_KEYS.has(e.key)) return; // the slider moves
      }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      let handled = true;
      switch (e.key) {
        case "ArrowLeft": stepCandidate(-1, true); break;
        case "ArrowRight": stepCandidate(1, true); break;
        case "ArrowUp": case "PageUp": setSlice(S.z - 1); break;
        case "ArrowDown": case "PageDown": setSlice(S.z + 1); break;
        case "Home": setIndex(0, true); break;
        case "End": setIndex(S.order.length - 1, true); break;
        case "f": case "F": setFlip(!S.flip); break;
        case "c": case "C": setCompare(!S.compare); break;
        case "d": case "D": setIndex(S.order.indexOf(S.defaultId), false); break;
        case "0": resetView(); break;
        default:
          if (e.key >= "1" && e.key <= "5") {
            const name = PRESET_KEYS[Number(e.key) - 1];
            setWindow(PRESETS[name][0], PRESETS[name][1], name);
          } else handled = false;
      }
      if (handled) e.preventDefault();
    });
  }

  window.ctdidViewer = {
    state: S,
    setIndex: setIndex,
    setStrength: setStrength,
    setSmooth: setSmooth,
    bracket: bracket,
    isPreview: isPreview,
    setSlice: setSlice,
    setWindow: setWindow,
    setCompare: setCompare,
    setFlip: setFlip,
    roiStats: roiStats,
    cached: cached,
    ready: () => S.firstPaintMs !== null,
    allCached: () => S.order.every((id) => S.cache.has(key(id, S.z))),
  };

  wire();
  buildLut();
  poll();
})();
