// Chromium entry: node run_chromium.mjs TVMJS_BROWSER_BUNDLE PLAN_JSON RESULT_JSON
// Serves the plan's files, tvmjs and plan.mjs on a loopback port, opens a page in headless
// Chromium (Debian's /usr/bin/chromium, WebGPU through SwiftShader; $CHROMIUM overrides), runs the
// plan there (plan.mjs) and writes the result as JSON. Paths inside the plan are relative to its folder.
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { answer, runInChromium } from "./browser.mjs";

const [bundle, planPath, resultPath] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const base = dirname(resolve(planPath));
const PAGE = `<!doctype html><meta charset="utf-8"><script src="/tvmjs.js"></script>
<script type="module">
import { runPlan } from "/plan.mjs";
window.runIt = (plan) => runPlan({
  tvmjs: window.tvmjs, plan,
  readBytes: async (path) => {
    const res = await fetch("/files?path=" + encodeURIComponent(path));
    if (!res.ok) throw new Error(path + ": HTTP " + res.status);
    return res.arrayBuffer();
  },
});
window.ready = true;
</script>`;

function serve(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  const routes = {
    "/": () => [PAGE, "text/html"],
    "/favicon.ico": () => ["", "image/x-icon"],
    "/tvmjs.js": async () => [await readFile(bundle), "text/javascript"],
    "/plan.mjs": async () => [await readFile(resolve(here, "plan.mjs")), "text/javascript"],
    "/files": async () => [await readFile(resolve(base, url.searchParams.get("path"))), "application/octet-stream"],
  };
  return answer(res, () => routes[url.pathname]());
}

await runInChromium(serve, async (page) => {
  const plan = JSON.parse(await readFile(planPath, "utf8"));
  return page.evaluate((p) => window.runIt(p), plan);
}, resultPath);
