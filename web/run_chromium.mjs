// Chromium entry: node run_chromium.mjs TVMJS_BROWSER_BUNDLE PLAN_JSON RESULT_JSON
// Serves the plan's files, tvmjs and plan.mjs on a loopback port, opens a page in headless
// Chromium (Debian's /usr/bin/chromium, WebGPU through SwiftShader; $CHROMIUM overrides), runs the
// plan there (plan.mjs) and writes the result as JSON. Paths inside the plan are relative to its folder.
import { createServer } from "node:http";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

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

async function serve(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  const routes = {
    "/": () => [PAGE, "text/html"],
    "/favicon.ico": () => ["", "image/x-icon"],
    "/tvmjs.js": async () => [await readFile(bundle), "text/javascript"],
    "/plan.mjs": async () => [await readFile(resolve(here, "plan.mjs")), "text/javascript"],
    "/files": async () => [await readFile(resolve(base, url.searchParams.get("path"))), "application/octet-stream"],
  };
  try {
    const [body, type] = await routes[url.pathname]();
    res.writeHead(200, { "content-type": type });
    res.end(body);
  } catch (err) {
    res.writeHead(404);
    res.end(String(err));
  }
}

const server = createServer(serve).listen(0, "127.0.0.1");
await new Promise((ok) => server.once("listening", ok));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--no-sandbox", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
});
let status = 0;
try {
  const page = await browser.newPage();
  page.on("console", (msg) => console.error(`[page] ${msg.text()}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => window.ready === true);
  const plan = JSON.parse(await readFile(planPath, "utf8"));
  const result = await page.evaluate((p) => window.runIt(p), plan);
  await writeFile(resultPath, JSON.stringify(result));
} catch (err) {
  console.error(`error: ${err && err.stack ? err.stack : err}`);
  status = 1;
} finally {
  await browser.close();
  server.close();
}
process.exit(status);
