// `mlc-mtp serve-web` entry: node serve_web.mjs PLAN_JSON_TEXT
// Serves an mlc-mtp `webgpu` package to WebLLM (webllm.mjs) with the chat page (chat.html) at "/"
// and the package's sampling defaults at /settings.json, on the listening socket the CLI made
// (file descriptor `fd`, bound to 127.0.0.1), until the process is stopped.
// Plan (pipeline/web.py, chat_plan): {"package": DIR, "wasm": FILE, "model_id": ID, "fd": N,
//        "settings": {"temperature", "top_p", "max_tokens"}}; absolute paths.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { webllmServer } from "./webllm.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const plan = JSON.parse(process.argv[2]);
const settings = JSON.stringify({ model_id: plan.model_id, ...plan.settings });
const serve = await webllmServer({
  packageDir: plan.package, wasm: plan.wasm, modelId: plan.model_id,
  pages: {
    "/": async () => [await readFile(resolve(here, "chat.html")), "text/html; charset=utf-8"],
    "/settings.json": () => [settings, "application/json"],
    "/favicon.ico": () => ["", "image/x-icon"],
  },
});
createServer(serve).listen({ fd: plan.fd });
