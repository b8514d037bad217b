// Chat-page entry: node chat_in_chromium.mjs URL RESULT_JSON PROMPT [NAME=VALUE ...] [--screenshot PNG]
// Opens `mlc-mtp serve-web`'s chat page (chat.html) at URL in headless Chromium (browser.mjs),
// waits until WebLLM has loaded the model, reads the settings the page shows, sets the given ones
// (temperature=0 ...) and types PROMPT as a user would (keyboard, then Enter), waits for the
// streamed reply to end, and writes {"settings_shown", "load_seconds", "reply": {content, usage,
// finish_reason, seconds}, "shown": the reply's text on the page, "stats": the tokens/s line,
// "streamed": how many texts the reply showed while it came} to RESULT_JSON; with --screenshot,
// a PNG of the page.
import { writeFile } from "node:fs/promises";
import { launchChromium } from "./browser.mjs";

const args = process.argv.slice(2);
const shot = args.indexOf("--screenshot");
const screenshot = shot >= 0 ? args.splice(shot, 2)[1] : null;
const [url, resultPath, prompt, ...assignments] = args;

const browser = await launchChromium();
let status = 0;
try {
  const page = await browser.newPage({ viewport: { width: 760, height: 380 } });
  page.on("console", (msg) => console.error(`[page] ${msg.text()}`));
  await page.goto(url);
  await page.waitForFunction(() => window.chat && (window.chat.ready || window.chat.error), null, { timeout: 0 });
  const loaded = await page.evaluate(() => ({ error: window.chat.error, seconds: window.chat.loadSeconds }));
  if (loaded.error) throw new Error(loaded.error);
  const names = ["temperature", "top_p", "max_tokens"];
  const settings = Object.fromEntries(await Promise.all(names.map(async (n) => [n, Number(await page.inputValue(`#${n}`))])));
  for (const assignment of assignments) {
    const [name, value] = assignment.split("=");
    await page.fill(`#${name}`, value);
  }
  // what the reply showed while it streamed: its text after each change
  await page.evaluate(() => {
    window.streamed = [];
    new MutationObserver(() => {
      const last = document.querySelector("#log .assistant:last-child span");
      if (last && last.textContent !== window.streamed.at(-1)) window.streamed.push(last.textContent);
    }).observe(document.getElementById("log"), { subtree: true, childList: true, characterData: true });
  });
  await page.click("#prompt");
  await page.keyboard.type(prompt);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => window.chat.replies.length === 1 && !window.chat.busy, null, { timeout: 0 });
  const result = await page.evaluate(() => ({
    error: window.chat.error, reply: window.chat.replies[0], streamed: window.streamed.length,
    shown: document.querySelector("#log .assistant:last-child span").textContent,
    stats: document.getElementById("stats").textContent,
  }));
  if (result.error) throw new Error(result.error);
  if (screenshot) await page.screenshot({ path: screenshot });
  await writeFile(resultPath, JSON.stringify({ settings_shown: settings, load_seconds: loaded.seconds, ...result }));
} catch (err) {
  console.error(`error: ${err && err.stack ? err.stack : err}`);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
