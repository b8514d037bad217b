// Node entry: node run_node.mjs TVMJS_BUNDLE PLAN_JSON RESULT_JSON
// Runs the plan (plan.mjs) on Dawn's WebGPU (npm `webgpu`) and writes the result as JSON.
// Paths inside the plan are relative to the plan's folder.
import { createRequire } from "node:module";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { create, globals } from "webgpu";
import { runPlan } from "./plan.mjs";

const [bundle, planPath, resultPath] = process.argv.slice(2);
Object.assign(globalThis, globals);
Object.defineProperty(globalThis, "navigator", { value: { gpu: create([]) }, configurable: true });
const tvmjs = createRequire(import.meta.url)(resolve(bundle));
const base = dirname(resolve(planPath));
const readBytes = async (path) => {
  const data = await readFile(resolve(base, path));
  return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
};

try {
  const plan = JSON.parse(await readFile(planPath, "utf8"));
  const result = await runPlan({ tvmjs, plan, readBytes, log: (msg) => console.error(msg) });
  await writeFile(resultPath, JSON.stringify(result));
  process.exit(0);  // Dawn keeps the event loop alive
} catch (err) {
  console.error(`error: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
}
