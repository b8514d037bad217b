// WebLLM entry: node run_webllm.mjs PLAN_JSON RESULT_JSON
// Loads an mlc-mtp `webgpu` package in unmodified WebLLM (npm @mlc-ai/web-llm, bundled for the
// browser here by esbuild) in headless Chromium (Debian's /usr/bin/chromium, WebGPU through
// SwiftShader; $CHROMIUM overrides), through its public API only: CreateMLCEngine with an
// appConfig entry for the package, then chat.completions.create. The package is served on a
// loopback port as WebLLM expects a Hugging Face repository: <model>/resolve/main/<file>.
// Plan: {"package": DIR, "wasm": FILE, "model_id": ID, "messages": [...], "max_tokens": N,
//        "temperature": T}; paths relative to the plan's folder. Result: {"content", "usage",
// "finish_reason", "load_seconds", "reply_seconds", "gpu_adapter"}.
import { readFile } from "node:fs/promises";
import { dirname, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { answer, runInChromium } from "./browser.mjs";

const [planPath, resultPath] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const base = dirname(resolve(planPath));
const plan = JSON.parse(await readFile(planPath, "utf8"));
const packageDir = resolve(base, plan.package);

const bundle = await build({
  stdin: { contents: 'import * as webllm from "@mlc-ai/web-llm"; globalThis.webllm = webllm;', resolveDir: here },
  bundle: true, format: "iife", platform: "browser", write: false, logLevel: "error",
});
const PAGE = `<!doctype html><meta charset="utf-8"><script src="/webllm.js"></script>
<script>window.ready = typeof webllm === "object";</script>`;

function serve(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  const prefix = "/model/resolve/main/";
  return answer(res, async () => {
    if (url.pathname === "/") return [PAGE, "text/html"];
    if (url.pathname === "/webllm.js") return [bundle.outputFiles[0].contents, "text/javascript"];
    if (url.pathname === "/lib.wasm") return [await readFile(resolve(base, plan.wasm)), "application/wasm"];
    if (!url.pathname.startsWith(prefix)) throw new Error("not found");
    const file = resolve(packageDir, decodeURIComponent(url.pathname.slice(prefix.length)));
    if (!file.startsWith(packageDir + sep)) throw new Error("outside the package");
    return [await readFile(file), file.endsWith(".json") ? "application/json" : "application/octet-stream"];
  });
}

await runInChromium(serve, (page) => page.evaluate(async (p) => {
    const origin = window.location.origin;
    const appConfig = { model_list: [{ model: `${origin}/model`, model_id: p.model_id, model_lib: `${origin}/lib.wasm` }] };
    const adapter = await navigator.gpu.requestAdapter();
    let start = performance.now();
    const engine = await webllm.CreateMLCEngine(p.model_id, { appConfig });
    const loadSeconds = (performance.now() - start) / 1000;
    start = performance.now();
    const reply = await engine.chat.completions.create({
      messages: p.messages, max_tokens: p.max_tokens, temperature: p.temperature, stream: false });
    const replySeconds = (performance.now() - start) / 1000;
    await engine.unload();
    return { content: reply.choices[0].message.content, finish_reason: reply.choices[0].finish_reason,
             usage: reply.usage, load_seconds: loadSeconds, reply_seconds: replySeconds,
             gpu_adapter: adapter && adapter.info ? adapter.info.description || adapter.info.vendor : "" };
}, plan), resultPath);

