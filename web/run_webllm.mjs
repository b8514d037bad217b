// WebLLM entry: node run_webllm.mjs PLAN_JSON RESULT_JSON
// Loads an mlc-mtp `webgpu` package in unmodified WebLLM (npm @mlc-ai/web-llm, served by
// webllm.mjs) in headless Chromium (Debian's /usr/bin/chromium, WebGPU through SwiftShader;
// $CHROMIUM overrides), through its public API only: CreateMLCEngine with the served appConfig
// entry for the package, then chat.completions.create.
// Plan: {"package": DIR, "wasm": FILE, "model_id": ID, "messages": [...], "max_tokens": N,
//        "temperature": T, "latency_breakdown": optional, true: WebLLM's times per step in
//        usage.extra.latencyBreakdown}; paths relative to the plan's folder. Result: {"content",
// "usage", "finish_reason", "load_seconds", "reply_seconds", "gpu_adapter"}.
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { runInChromium } from "./browser.mjs";
import { webllmServer } from "./webllm.mjs";

const [planPath, resultPath] = process.argv.slice(2);
const base = dirname(resolve(planPath));
const plan = JSON.parse(await readFile(planPath, "utf8"));
const PAGE = `<!doctype html><meta charset="utf-8"><script src="/webllm.js"></script>
<script>window.ready = typeof webllm === "object";</script>`;

const serve = await webllmServer({ packageDir: resolve(base, plan.package), wasm: resolve(base, plan.wasm),
                                   modelId: plan.model_id, pages: { "/": () => [PAGE, "text/html"] } });

await runInChromium(serve, (page) => page.evaluate(async (p) => {
    const appConfig = await (await fetch("/app-config.json")).json();
    const adapter = await navigator.gpu.requestAdapter();
    let start = performance.now();
    const engine = await webllm.CreateMLCEngine(p.model_id, { appConfig });
    const loadSeconds = (performance.now() - start) / 1000;
    start = performance.now();
    const reply = await engine.chat.completions.create({
      messages: p.messages, max_tokens: p.max_tokens, temperature: p.temperature, stream: false,
      extra_body: p.latency_breakdown ? { enable_latency_breakdown: true } : undefined });
    const replySeconds = (performance.now() - start) / 1000;
    await engine.unload();
    return { content: reply.choices[0].message.content, finish_reason: reply.choices[0].finish_reason,
             usage: reply.usage, load_seconds: loadSeconds, reply_seconds: replySeconds,
             gpu_adapter: adapter && adapter.info ? adapter.info.description || adapter.info.vendor : "" };
}, plan), resultPath);
