// An mlc-mtp `webgpu` package served to unmodified WebLLM (npm @mlc-ai/web-llm), as run_webllm.mjs
// (tests) and serve_web.mjs (`mlc-mtp serve-web`) serve it: WebLLM bundled for the page by esbuild
// at /webllm.js (global `webllm`), the package as WebLLM expects a Hugging Face repository
// (/model/resolve/main/<file>), its library at /lib.wasm, and at /app-config.json the `appConfig`
// that CreateMLCEngine takes, with one model_list entry for them on the origin the page came from.
import { readFile } from "node:fs/promises";
import { dirname, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { answer } from "./browser.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const MODEL = "/model/resolve/main/";

// `serve(req, res)` for the package in `packageDir` (absolute), its library `wasm` (absolute) under
// the WebLLM model id `modelId`, plus `pages`: {path: () => [body, content type]}.
export async function webllmServer({ packageDir, wasm, modelId, pages }) {
  const bundle = await build({
    stdin: { contents: 'import * as webllm from "@mlc-ai/web-llm"; globalThis.webllm = webllm;', resolveDir: here },
    bundle: true, format: "iife", platform: "browser", write: false, logLevel: "error",
  });
  const script = bundle.outputFiles[0].contents;
  return (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    return answer(res, async () => {
      if (pages[url.pathname]) return pages[url.pathname]();
      if (url.pathname === "/webllm.js") return [script, "text/javascript"];
      if (url.pathname === "/lib.wasm") return [await readFile(wasm), "application/wasm"];
      if (url.pathname === "/app-config.json") {
        const origin = `http://${req.headers.host}`;
        const entry = { model: `${origin}/model`, model_id: modelId, model_lib: `${origin}/lib.wasm` };
        return [JSON.stringify({ model_list: [entry] }), "application/json"];
      }
      if (!url.pathname.startsWith(MODEL)) throw new Error("not found");
      const file = resolve(packageDir, decodeURIComponent(url.pathname.slice(MODEL.length)));
      if (!file.startsWith(packageDir + sep)) throw new Error("outside the package");
      return [await readFile(file), file.endsWith(".json") ? "application/json" : "application/octet-stream"];
    });
  };
}
