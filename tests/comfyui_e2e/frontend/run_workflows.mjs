// Drives ComfyUI's own web frontend in headless Chromium the way a new user does: open the page, dismiss the
// first-run dialogs, drop each workflow file onto the canvas, press Run, wait for the prompt to finish and
// record what the UI shows (dialogs, toasts, the server's node errors), the output images and screenshots.
//
//   node run_workflows.mjs --url http://127.0.0.1:8188 --out OUTDIR --chromium /usr/bin/chromium \
//        [--node-modules DIR_WITH_playwright-core] [--timeout 900] WORKFLOW.json...
//
// Writes OUTDIR/frontend_report.json, OUTDIR/screenshots/*.png and OUTDIR/images/<workflow>/*.
// Started by tests/comfyui_e2e/frontend_run.py, which also starts ComfyUI with the pack installed.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

function parseArgs(argv) {
  const opts = { files: [], timeout: 900, width: 1920, height: 1080 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === "--url") opts.url = next();
    else if (a === "--out") opts.out = next();
    else if (a === "--chromium") opts.chromium = next();
    else if (a === "--node-modules") opts.nodeModules = next();
    else if (a === "--timeout") opts.timeout = Number(next());
    else if (a === "--width") opts.width = Number(next());
    else if (a === "--height") opts.height = Number(next());
    else if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
    else opts.files.push(a);
  }
  for (const k of ["url", "out", "chromium"]) if (!opts[k]) throw new Error(`--${k} is required`);
  if (!opts.files.length) throw new Error("no workflow files given");
  return opts;
}

function loadPlaywright(nodeModules) {
  // playwright-core is CommonJS: resolve it from the given node_modules folder, else from next to this script
  const bases = [nodeModules, path.join(path.dirname(new URL(import.meta.url).pathname), "node_modules")]
    .filter(Boolean);
  for (const base of bases) {
    try {
      return createRequire(path.join(path.resolve(base), "_resolve.js"))("playwright-core");
    } catch { /* try the next folder */ }
  }
  throw new Error(`playwright-core not found in ${bases.join(", ")}: run "npm install" in tests/comfyui_e2e/frontend `
    + "or pass --node-modules DIR");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, n = 2) => Math.round(x * 10 ** n) / 10 ** n;
const now = () => performance.now() / 1000;

// Visible dialogs and toasts, as text (what the user reads).
async function visibleMessages(page) {
  return page.evaluate(() => {
    const visible = (el) => {
      const r = el.getBoundingClientRect();
      const s = getComputedStyle(el);
      return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none";
    };
    const texts = (sel) => [...document.querySelectorAll(sel)].filter(visible)
      .map((el) => el.innerText.trim()).filter(Boolean);
    return {
      dialogs: texts('[role="dialog"], [role="alertdialog"], .comfy-modal'),
      toasts: texts(".p-toast-message"),
    };
  });
}

// Close every visible dialog / toast (close button, else Escape). Returns the texts that were closed.
async function dismissAll(page, rounds = 6) {
  const closed = [];
  for (let i = 0; i < rounds; i++) {
    const { dialogs, toasts } = await visibleMessages(page);
    if (!dialogs.length && !toasts.length) break;
    closed.push(...dialogs.map((t) => ({ kind: "dialog", text: t })), ...toasts.map((t) => ({ kind: "toast", text: t })));
    const clicked = await page.evaluate(() => {
      const sels = ['[role="dialog"] .p-dialog-close-button', '[role="dialog"] button[aria-label="Close"]',
        '[role="dialog"] button[aria-label="close"]', '[role="dialog"] button:has(> i.pi-times)',
        '[role="dialog"] button:has(> [class*="lucide--x]"])', ".p-toast-close-button", ".comfy-modal .comfy-modal-close"];
      let n = 0;
      for (const sel of sels) {
        const b = [...document.querySelectorAll(sel)].find((x) => x.offsetParent !== null);
        if (b) { b.click(); n++; }
      }
      return n;
    });
    if (!clicked) await page.keyboard.press("Escape");
    await sleep(400);
  }
  return closed;
}

async function waitForFrontend(page, timeoutMs) {
  await page.waitForFunction(() => window.app?.graph && window.app?.canvas && document.querySelector("#graph-canvas"),
    null, { timeout: timeoutMs, polling: 250 });
  await page.locator('[data-testid="queue-button"]').first().waitFor({ state: "visible", timeout: timeoutMs });
  // the new-user flow opens the template browser a moment after the graph is ready: give it up to 10 s
  await page.locator('[role="dialog"]').first().waitFor({ state: "visible", timeout: 10000 }).catch(() => {});
  await sleep(500);
}

async function dropWorkflow(page, file) {
  const text = fs.readFileSync(file, "utf-8");
  const name = path.basename(file);
  const box = await page.locator("#graph-canvas").boundingBox();
  const at = { clientX: Math.round(box.x + box.width / 2), clientY: Math.round(box.y + box.height / 2) };
  const dt = await page.evaluateHandle(({ text, name }) => {
    const d = new DataTransfer();
    d.items.add(new File([text], name, { type: "application/json" }));
    return d;
  }, { text, name });
  for (const type of ["dragenter", "dragover", "drop"]) {
    await page.dispatchEvent("#graph-canvas", type, { dataTransfer: dt, ...at });
  }
  await dt.dispose();
}

async function graphSummary(page) {
  return page.evaluate(() => ({
    nodes: window.app.graph.nodes.length,
    types: window.app.graph.nodes.map((n) => n.type),
  }));
}

async function fetchJson(page, url) {
  const r = await page.request.get(url);
  return r.ok() ? r.json() : null;
}

async function waitHistory(page, base, promptId, timeoutS) {
  const t0 = now();
  while (now() - t0 < timeoutS) {
    const h = await fetchJson(page, `${base}/api/history/${promptId}`);
    const entry = h?.[promptId];
    const st = entry?.status;
    if (st && (st.completed || st.status_str === "error" || st.status_str === "success")) return entry;
    await sleep(300);
  }
  return null;
}

function safe(s) { return String(s).replace(/[^A-Za-z0-9._-]+/g, "_"); }

async function runOne(page, opts, file, index, shots, imagesRoot) {
  const name = path.basename(file, ".json");
  const tag = `${String(index + 1).padStart(2, "0")}_${name}`;
  const wf = JSON.parse(fs.readFileSync(file, "utf-8"));
  const rec = { workflow: name, file: path.resolve(file), status: "unknown", load_method: "drop", ui_messages: [],
    screenshots: {}, images: [] };
  const base = opts.url.replace(/\/$/, "");
  const t0 = now();

  // 0. anything still open (a late first-run dialog, a leftover toast) would swallow the drop and the click
  const leftover = await dismissAll(page);
  rec.ui_messages.push(...leftover.map((m) => ({ when: "before load", ...m })));

  // 1. drop the file onto the canvas and wait for the graph to be replaced by the workflow's nodes
  await dropWorkflow(page, file);
  const expected = wf.nodes.length;
  try {
    await page.waitForFunction(({ expected, name }) => {
      const g = window.app.graph;
      const active = window.app.extensionManager?.workflow?.activeWorkflow;
      const named = !active || (active.filename ?? active.path ?? "").includes(name);
      return g.nodes.length === expected && named;
    }, { expected, name }, { timeout: 30000, polling: 200 });
  } catch {
    rec.load_error = `graph did not show the workflow's ${expected} nodes within 30 s after the drop`;
  }
  rec.graph = await graphSummary(page);
  rec.load_s = round(now() - t0);
  await sleep(800);
  const onLoad = await visibleMessages(page);
  if (onLoad.dialogs.length || onLoad.toasts.length) {
    rec.ui_messages.push(...onLoad.dialogs.map((t) => ({ when: "after load", kind: "dialog", text: t })),
      ...onLoad.toasts.map((t) => ({ when: "after load", kind: "toast", text: t })));
    const p = path.join(shots, `${tag}_0_loaded.png`);
    await page.screenshot({ path: p, fullPage: true });
    rec.screenshots.loaded = p;
    await dismissAll(page);
  }
  if (rec.load_error) {
    rec.status = "load_failed";
    const p = path.join(shots, `${tag}_1_after_run.png`);
    await page.screenshot({ path: p, fullPage: true });
    rec.screenshots.after_run = p;
    return rec;
  }

  // 2. press Run; the frontend POSTs /api/prompt: read its answer
  await page.evaluate(() => {
    window.__e2eEvents = [];
    if (!window.__e2eHooked) {
      window.__e2eHooked = true;
      const api = window.comfyAPI?.api?.api ?? window.app.api;
      for (const ev of ["execution_start", "execution_error", "execution_success", "execution_interrupted",
        "execution_cached", "executed"]) {
        api.addEventListener(ev, (e) => window.__e2eEvents.push({ type: ev, data: e.detail, t: performance.now() / 1000 }));
      }
    }
  });
  const promptResp = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST",
    { timeout: 30000 }).catch(() => null);
  const tRun = now();
  const button = page.locator('[data-testid="queue-button"] button').first();
  try {
    await button.click({ timeout: 10000 });
  } catch {  // something covers the button: record and close it, then press Run again
    rec.ui_messages.push(...(await dismissAll(page)).map((m) => ({ when: "covering Run", ...m })));
    await button.click({ timeout: 10000 });
  }
  await page.mouse.move(opts.width / 2, opts.height - 40);
  const resp = await promptResp;
  if (!resp) {
    rec.status = "not_queued";
    rec.error = "pressing Run sent no POST /api/prompt within 30 s";
  } else {
    let body = null;
    try { body = await resp.json(); } catch { body = await resp.text().catch(() => null); }
    rec.queue_http_status = resp.status();
    rec.queue_response = body;
    if (resp.status() !== 200) {
      rec.status = "rejected";
      rec.node_errors = Object.fromEntries(Object.entries(body?.node_errors ?? {}).map(([id, e]) =>
        [id, { class_type: e.class_type, errors: e.errors.map((x) => `${x.message}: ${x.details}`) }]));
      const details = Object.entries(rec.node_errors).map(([id, e]) => `${e.class_type} (node ${id}): `
        + e.errors.join("; "));
      rec.error = [body?.error?.message ?? String(body), ...details].join(" | ");
      await sleep(1500);
    } else {
      rec.prompt_id = body.prompt_id;
      const hist = await waitHistory(page, base, body.prompt_id, opts.timeout);
      rec.run_s = round(now() - tRun);
      if (!hist) {
        rec.status = "timeout";
        rec.error = `no result within ${opts.timeout} s`;
        await page.request.post(`${base}/api/interrupt`, { data: {} }).catch(() => {});
      } else {
        rec.status = hist.status.status_str === "success" ? "success" : "error";
        const msgs = hist.status.messages ?? [];
        const err = msgs.find(([ev]) => ev === "execution_error")?.[1];
        if (err) {
          rec.error = `${err.node_type} (node ${err.node_id}): ${err.exception_type}: ${err.exception_message}`.trim();
        }
        if (msgs.find(([ev]) => ev === "execution_interrupted")) rec.status = "interrupted";
        const times = Object.fromEntries(msgs.map(([ev, d]) => [ev, d.timestamp]));
        if (times.execution_start && (times.execution_success || times.execution_error)) {
          rec.execute_s = round(((times.execution_success ?? times.execution_error) - times.execution_start) / 1000);
        }
        // 3. fetch every image the prompt produced (SaveImage -> output, PreviewImage -> temp)
        const dir = path.join(imagesRoot, name);
        for (const [nodeId, out] of Object.entries(hist.outputs ?? {})) {
          const nodeType = hist.prompt?.[2]?.[nodeId]?.class_type ?? "?";
          for (const [i, img] of (out.images ?? []).entries()) {
            const q = new URLSearchParams({ filename: img.filename, subfolder: img.subfolder ?? "", type: img.type ?? "output" });
            const r = await page.request.get(`${base}/api/view?${q}`);
            fs.mkdirSync(dir, { recursive: true });
            const dest = path.join(dir, `node${safe(nodeId)}_${safe(nodeType)}_${i}_${safe(img.filename)}`);
            fs.writeFileSync(dest, await r.body());
            rec.images.push({ node: nodeId, class_type: nodeType, type: img.type, filename: img.filename,
              subfolder: img.subfolder ?? "", path: dest });
          }
        }
      }
      await sleep(1500); // previews are drawn on the nodes after the "executed" events
    }
  }
  rec.ws_events = (await page.evaluate(() => window.__e2eEvents)).map((e) => e.type);

  // 4. what the UI shows now, then screenshots: as the user sees it, without dialogs, and fitted to the view
  const shown = await visibleMessages(page);
  rec.ui_messages.push(...shown.dialogs.map((t) => ({ when: "after run", kind: "dialog", text: t })),
    ...shown.toasts.map((t) => ({ when: "after run", kind: "toast", text: t })));
  let p = path.join(shots, `${tag}_1_after_run.png`);
  const tShot = now();
  await page.screenshot({ path: p, fullPage: true });
  rec.screenshot_s = round(now() - tShot);
  rec.screenshots.after_run = p;
  if (shown.dialogs.length || shown.toasts.length) {
    await dismissAll(page);
    p = path.join(shots, `${tag}_2_canvas.png`);
    await page.screenshot({ path: p, fullPage: true });
    rec.screenshots.canvas = p;
  }
  // "." = Comfy.Canvas.FitView (fits the selection if there is one: deselect first; no text field focused)
  await page.evaluate(() => { window.app.canvas.deselectAll?.(); document.activeElement?.blur?.(); });
  await page.keyboard.press(".");
  await sleep(700);
  p = path.join(shots, `${tag}_3_fit_view.png`);
  await page.screenshot({ path: p, fullPage: true });
  rec.screenshots.fit_view = p;
  rec.total_s = round(now() - t0);
  return rec;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { chromium } = loadPlaywright(opts.nodeModules);
  const shots = path.join(opts.out, "screenshots");
  const imagesRoot = path.join(opts.out, "images");
  fs.mkdirSync(shots, { recursive: true });
  const report = { url: opts.url, started: new Date().toISOString(), first_run: {}, workflows: [], console_errors: [] };
  const browser = await chromium.launch({
    executablePath: opts.chromium, headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--renderer-process-limit=1"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: opts.width, height: opts.height } });
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error") report.console_errors.push(m.text().slice(0, 500)); });
    page.on("pageerror", (e) => report.console_errors.push(`pageerror: ${String(e).slice(0, 500)}`));
    report.http_errors = [];
    page.on("response", (r) => { if (r.status() >= 400) report.http_errors.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
    const t0 = now();
    await page.goto(opts.url, { waitUntil: "domcontentloaded", timeout: 120000 });
    await waitForFrontend(page, 120000);
    report.first_run.ready_s = round(now() - t0);
    report.first_run.frontend_version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
    let p = path.join(shots, "00_first_start.png");
    await page.screenshot({ path: p, fullPage: true });
    report.first_run.screenshot = p;
    report.first_run.dismissed = await dismissAll(page);
    p = path.join(shots, "00_after_dismiss.png");
    await page.screenshot({ path: p, fullPage: true });
    report.first_run.screenshot_after_dismiss = p;
    for (const [i, file] of opts.files.entries()) {
      let rec;
      try {
        rec = await runOne(page, opts, file, i, shots, imagesRoot);
      } catch (e) {
        rec = { workflow: path.basename(file, ".json"), status: "driver_error", error: String(e?.stack ?? e) };
        await dismissAll(page).catch(() => {});
      }
      report.workflows.push(rec);
      console.log(`${rec.workflow}: ${rec.status}${rec.error ? " - " + String(rec.error).split("\n")[0] : ""}`
        + `${rec.run_s !== undefined ? ` (${rec.run_s} s)` : ""}, ${rec.images?.length ?? 0} images`);
      fs.writeFileSync(path.join(opts.out, "frontend_report.json"), JSON.stringify(report, null, 1));
    }
  } finally {
    await browser.close();
  }
  report.finished = new Date().toISOString();
  fs.writeFileSync(path.join(opts.out, "frontend_report.json"), JSON.stringify(report, null, 1));
}

main().catch((e) => { console.error(e?.stack ?? String(e)); process.exit(2); });
