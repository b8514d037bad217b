// What the headless-Chromium entries share: Debian's /usr/bin/chromium ($CHROMIUM overrides) with
// WebGPU through SwiftShader (launchChromium; chat_in_chromium.mjs uses only this), and for
// run_chromium.mjs and run_webllm.mjs a loopback HTTP server whose routes each entry gives, one
// page that sets `window.ready`, and the task's result written as JSON (runInChromium).
import { createServer } from "node:http";
import { writeFile } from "node:fs/promises";
import { chromium } from "playwright-core";

// Answer a request with `produce()`'s [body, content type]; 404 with the error when it throws.
export async function answer(res, produce) {
  try {
    const [body, type] = await produce();
    res.writeHead(200, { "content-type": type });
    res.end(body);
  } catch (err) {
    res.writeHead(404);
    res.end(String(err));
  }
}

// Headless Chromium with WebGPU (SwiftShader where there is no GPU), no network of its own.
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--no-sandbox", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
  });
}

// Serve with `serve(req, res)` on 127.0.0.1, open its "/" in Chromium, wait for `window.ready`,
// write `await task(page)` to `resultPath` as JSON, and exit (status 1 after printing the error).
export async function runInChromium(serve, task, resultPath) {
  const server = createServer(serve).listen(0, "127.0.0.1");
  await new Promise((ok) => server.once("listening", ok));
  const browser = await launchChromium();
  let status = 0;
  try {
    const page = await browser.newPage();
    page.on("console", (msg) => console.error(`[page] ${msg.text()}`));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForFunction(() => window.ready === true);
    await writeFile(resultPath, JSON.stringify(await task(page)));
  } catch (err) {
    console.error(`error: ${err && err.stack ? err.stack : err}`);
    status = 1;
  } finally {
    await browser.close();
    server.close();
  }
  process.exit(status);
}
