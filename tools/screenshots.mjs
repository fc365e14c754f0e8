// Look at the built book as a reader does: full-page screenshots of chosen pages of
// _build/html, taken by a headless Chromium at a reader's window width.
//
// Chromium comes from npm (the registry is all it needs), pinned:
//   mkdir -p /tmp/look && cd /tmp/look && npm install @sparticuz/chromium@153.0.0 puppeteer-core@25.16.0
//   NODE_PATH=/tmp/look/node_modules node tools/screenshots.mjs OUTDIR [WIDTH] [PAGE ...]
// PAGE is a path under _build/html (default: every page of book/); WIDTH defaults to 1400.
// It prints each page's height and any request that failed (a missing image or script).
import fs from 'node:fs';
import path from 'node:path';
import {createRequire} from 'node:module';

const require = createRequire(path.join(process.env.NODE_PATH || '.', 'x.js'));
const chromiumModule = require('@sparticuz/chromium');
const chromium = chromiumModule.default || chromiumModule;   // CommonJS or ES module build
const puppeteer = require('puppeteer-core');
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '_build', 'html');
const [outdir, width = '1400', ...chosen] = process.argv.slice(2);
if (!outdir) { console.error('usage: node tools/screenshots.mjs OUTDIR [WIDTH] [PAGE ...]'); process.exit(2); }
const pages = chosen.length ? chosen
  : fs.readdirSync(path.join(root, 'book')).filter(f => f.endsWith('.html')).map(f => `book/${f}`);
fs.mkdirSync(outdir, {recursive: true});
const browser = await puppeteer.launch({args: chromium.args, executablePath: await chromium.executablePath(),
                                        headless: true, defaultViewport: {width: parseInt(width), height: 1000}});
const page = await browser.newPage();
page.on('requestfailed', r => console.log('request failed:', r.url()));
for (const p of pages) {
  await page.goto('file://' + path.join(root, p), {waitUntil: 'networkidle0', timeout: 120000});
  await new Promise(r => setTimeout(r, 1500));  // MathJax typesets after load
  await page.screenshot({path: path.join(outdir, p.replace(/\//g, '_').replace('.html', '.png')), fullPage: true});
  console.log(p, 'height', await page.evaluate(() => document.body.scrollHeight));
}
await browser.close();
