// Runs a WebGPU model library (.wasm) through tvmjs on a real WebGPU device, as a "plan" says, and
// returns what it produced. Shared by the Node (Dawn) and Chromium entry points; they provide
// tvmjs, navigator.gpu and a way to read the plan's files.
//
// plan: {
//   wasm: "lib.wasm",
//   tensors: {name: {file, shape, dtype}},                 // inputs, raw little-endian bytes
//   calls: [{function, args: [tensor name | {value, dtype}], // VM function calls (output: the
//            output | module: "system", fetch: [names]}],    // result's name, or a list of names
//                                                            // for a tuple; later calls may use
//                                                            // them) or the library's own
//                                                            // functions (fetch: tensors they write)
//   llm: {weights: "dir with tensor-cache.json", context_window, prefill_chunk, page_size,
//         steps: [{function: "prefill" | "decode" | ..., tokens: [ids]}]}   // MLC calling convention
// }
// result: {adapter: {vendor, architecture, device, description, features}, shader_f16,
//          outputs: {name: {shape, dtype, base64}}, step_ms: [..],
//          gpu_errors: [WebGPU validation messages nobody caught: a dispatch that did not run]}

function toBase64(bytes) {
  if (typeof Buffer !== "undefined") return Buffer.from(bytes).toString("base64");
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

async function toHost(tvm, dev, tensor) {
  const host = tvm.empty(tensor.shape, tensor.dtype, tvm.cpu());
  host.copyFrom(tensor);
  await dev.sync();
  return { shape: Array.from(tensor.shape), dtype: tensor.dtype, base64: toBase64(host.toRawBytes()) };
}

async function upload(tvm, dev, bytes, shape, dtype) {
  const host = tvm.empty(shape, dtype, tvm.cpu());
  host.copyFromRawBytes(new Uint8Array(bytes));
  const tensor = tvm.empty(shape, dtype, dev);
  tensor.copyFrom(host);
  await dev.sync();
  return tensor;
}

// The package's weights (tensor-cache.json, raw records) into tvmjs's tensor cache, then the
// parameter tuple in the library's _metadata order.
async function loadParams(tvm, dev, vm, readBytes, dir) {
  const index = JSON.parse(new TextDecoder().decode(await readBytes(`${dir}/tensor-cache.json`)));
  for (const shard of index.records) {
    const data = await readBytes(`${dir}/${shard.dataPath}`);
    for (const rec of shard.records) {
      if (rec.format !== "raw") throw new Error(`${rec.name}: weight format ${rec.format}, expected raw`);
      const bytes = data.slice(rec.byteOffset, rec.byteOffset + rec.nbytes);
      tvm.tensorCacheUpdate(rec.name, await upload(tvm, dev, bytes, rec.shape, rec.dtype), true);
    }
  }
  const metadata = JSON.parse(vm.getFunction("_metadata")());
  return tvm.getParamsFromCacheByName(metadata.params.map((p) => p.name));
}

async function runLLM(tvm, tvmjs, dev, vm, readBytes, llm, outputs, stepMs) {
  const params = await loadParams(tvm, dev, vm, readBytes, llm.weights);
  const shape = (n) => tvm.makeShapeTuple([n]);
  const kv = vm.getFunction("create_paged_kv_cache")(
    shape(1), shape(llm.context_window), shape(llm.prefill_chunk), shape(llm.page_size), shape(0));
  tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence")(kv, new tvmjs.Scalar(0, "int64"));
  const begin = tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward");
  const end = tvm.getGlobalFunc("vm.builtin.kv_state_end_forward");
  const embed = vm.getFunction("embed");
  for (const [i, step] of llm.steps.entries()) {
    const start = performance.now();
    const n = step.tokens.length;
    const ids = tvm.empty([n], "int32", dev).copyFrom(Int32Array.from(step.tokens));
    const rows = embed(ids, params);
    begin(kv, shape(0), shape(n));
    const ret = vm.getFunction(step.function)(rows.view([1, n, rows.shape[1]]), kv, params);
    end(kv);
    outputs[`step${i}`] = await toHost(tvm, dev, ret.get(0));
    stepMs.push(performance.now() - start);
  }
}

export async function runPlan({ tvmjs, plan, readBytes, log = () => {} }) {
  const tvm = await tvmjs.instantiate(await readBytes(plan.wasm), tvmjs.createPolyfillWASI(), log);
  const gpu = await tvmjs.detectGPUDevice();
  if (gpu === undefined) throw new Error("no WebGPU adapter (navigator.gpu is missing)");
  const gpuErrors = [];  // shader compilation and validation messages
  gpu.device.addEventListener("uncapturederror", (e) => gpuErrors.push(e.error.message));
  tvm.initWebGPU(gpu.device);
  const dev = tvm.webgpu();
  const info = gpu.adapterInfo;
  const result = {
    adapter: {
      vendor: info.vendor, architecture: info.architecture, device: info.device,
      description: info.description, features: Array.from(gpu.device.features).sort(),
    },
    shader_f16: gpu.device.features.has("shader-f16"),
    outputs: {},
    step_ms: [],
  };
  tvm.beginScope();
  const needsVM = plan.llm || (plan.calls || []).some((call) => call.module !== "system");
  const vm = needsVM ? tvm.createVirtualMachine(dev) : null;
  try {  // compiles every shader up front (a kernel called alone compiles on its first call)
    if (vm) await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
  } catch (err) {
    throw new Error(`${err.message}\n${gpuErrors.join("\n")}`);
  }
  const tensors = {};
  for (const [name, t] of Object.entries(plan.tensors || {})) {
    tensors[name] = await upload(tvm, dev, await readBytes(t.file), t.shape, t.dtype);
  }
  for (const call of plan.calls || []) {
    const start = performance.now();
    const args = call.args.map((a) => (typeof a === "string" ? tensors[a] : new tvmjs.Scalar(a.value, a.dtype)));
    if (call.module === "system") {  // a kernel of the library itself; its outputs are arguments
      tvm.systemLib().getFunction(call.function)(...args);
      for (const name of call.fetch) result.outputs[name] = await toHost(tvm, dev, tensors[name]);
    } else {  // output: a name, or a list of names for a tuple; later calls may take them as inputs
      const ret = vm.getFunction(call.function)(...args);
      const names = Array.isArray(call.output) ? call.output : [call.output];
      for (const [i, name] of names.entries()) {
        tensors[name] = Array.isArray(call.output) ? ret.get(i) : ret;
        result.outputs[name] = await toHost(tvm, dev, tensors[name]);
      }
    }
    result.step_ms.push(performance.now() - start);
  }
  if (plan.llm) await runLLM(tvm, tvmjs, dev, vm, readBytes, plan.llm, result.outputs, result.step_ms);
  tvm.endScope();
  result.gpu_errors = gpuErrors;
  return result;
}
