// The presence page in a real browser: Debian's chromium, driven by playwright-core.
//
//     node browser_check.mjs http://127.0.0.1:PORT [SCREENSHOT.png]
//
// The server serves the presence page at / (create_app(..., page=True)). Two browser contexts
// (two separate users, nothing shared) open it: alice through the form, bob through the URL's
// ?room=&user= query. Each must see the other; a second tab of alice's shows her with two
// connections; alice's connection drops and her page reconnects and rejoins (a new join ref);
// bob's context closes and alice sees him leave. With a screenshot path, alice's page is saved
// there while both users are online (alice in two tabs). One JSON line per step; exit status 1 on a failure.
//
// CHROMIUM names the browser binary (default /usr/bin/chromium).

import {mkdtemp, rm} from "node:fs/promises"
import {tmpdir} from "node:os"
import {join} from "node:path"
import {chromium} from "playwright-core"

const TIMEOUT_MS = Number(process.env.STEP_DEADLINE_MS || 15000)
const ROOM = "room:lobby"

const [base, screenshot] = process.argv.slice(2)
if(!base || !/^https?:\/\//.test(base)){
  console.error("usage: node browser_check.mjs http://HOST:PORT [SCREENSHOT.png]")
  process.exit(2)
}

function emit(line){ process.stdout.write(JSON.stringify(line) + "\n") }

let step = "launch"
const started = Date.now()

async function expectUsers(page, who, users){
  // Wait until the list shows exactly `users` ({name: connections}).
  const want = JSON.stringify(users)
  try {
    await page.waitForFunction(expected => {
      const got = {}
      for(const item of document.querySelectorAll("#presences li[data-key]")){
        got[item.dataset.key] = Number(item.dataset.connections)
      }
      return JSON.stringify(got) === expected
    }, want, {timeout: TIMEOUT_MS, polling: 20})
  } catch(error){
    const got = await page.evaluate(() => Array.from(document.querySelectorAll("#presences li"), li => li.textContent))
    throw new Error(`${who}'s page should list ${want}, it lists ${JSON.stringify(got)} (${error.message.split("\n")[0]})`)
  }
}

async function main(){
  const profile = await mkdtemp(join(tmpdir(), "presence-chromium-"))
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    timeout: TIMEOUT_MS,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      `--disk-cache-dir=${join(profile, "cache")}`,
    ],
  })
  try {
    emit({step, ok: true, browser: browser.version()})
    const errors = []
    const newPage = async (context, who) => {
      const page = await context.newPage()
      page.setDefaultTimeout(TIMEOUT_MS)
      page.on("pageerror", error => errors.push(`${who}: ${error.message}`))
      page.on("console", message => { if(message.type() === "error"){ errors.push(`${who}: ${message.text()}`) } })
      page.on("response", response => { if(response.status() >= 400){ errors.push(`${who}: HTTP ${response.status()} for ${response.url()}`) } })
      return page
    }
    const aliceContext = await browser.newContext({viewport: {width: 720, height: 480}, deviceScaleFactor: 1})
    const bobContext = await browser.newContext({viewport: {width: 720, height: 560}})

    step = "alice joins through the form"
    const alice = await newPage(aliceContext, "alice")
    await alice.goto(`${base}/`)
    await alice.fill("#user", "alice")
    await alice.fill("#room", ROOM)
    await alice.click("#join")
    await alice.waitForSelector('#status[data-state="joined"]')
    await expectUsers(alice, "alice", {alice: 1})
    emit({step, ok: true, url: alice.url()})

    step = "bob joins through the URL"
    const bob = await newPage(bobContext, "bob")
    await bob.goto(`${base}/?room=${encodeURIComponent(ROOM)}&user=bob`)
    await bob.waitForSelector('#status[data-state="joined"]')
    await expectUsers(bob, "bob", {alice: 1, bob: 1})
    await expectUsers(alice, "alice", {alice: 1, bob: 1})
    emit({step, ok: true})

    step = "alice opens a second tab"
    const alice2 = await newPage(aliceContext, "alice's second tab")
    await alice2.goto(`${base}/?room=${encodeURIComponent(ROOM)}&user=alice`)
    await expectUsers(bob, "bob", {alice: 2, bob: 1})
    await expectUsers(alice, "alice", {alice: 2, bob: 1})
    if(screenshot){
      await alice.bringToFront()
      await alice.screenshot({path: screenshot, fullPage: true})
      emit({step: "screenshot", ok: true, path: screenshot})
    }
    await alice2.close()
    await expectUsers(bob, "bob", {alice: 1, bob: 1})
    emit({step, ok: true})

    step = "alice's connection drops and comes back"
    const joinRef = await alice.evaluate(() => window.presenceClient.joinRef)
    await alice.evaluate(() => window.presenceClient.ws.close())
    await alice.waitForFunction(old => {
      const client = window.presenceClient
      return client.joined && client.joinRef !== old && client.stateJoinRef === client.joinRef
    }, joinRef, {timeout: TIMEOUT_MS, polling: 20})
    await expectUsers(alice, "alice", {alice: 1, bob: 1})
    await expectUsers(bob, "bob", {alice: 1, bob: 1})
    emit({step, ok: true})

    step = "bob closes his window"
    await bobContext.close()
    await expectUsers(alice, "alice", {alice: 1})
    emit({step, ok: true})

    step = "page errors"
    if(errors.length){ throw new Error(errors.join("; ")) }
    emit({step, ok: true})
    await aliceContext.close()
  } finally {
    await browser.close()
    await rm(profile, {recursive: true, force: true})
  }
}

main().then(() => {
  emit({done: true, ok: true, ms: Date.now() - started})
  process.exit(0)
}, error => {
  emit({step, ok: false, error: String(error && error.stack || error)})
  process.exit(1)
})
