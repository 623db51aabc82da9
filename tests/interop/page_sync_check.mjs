// The presence page's sync functions against phoenix.js's, on random states and diffs.
//
//     node page_sync_check.mjs PATH/TO/static/presence.js [SEED] [ROUNDS]
//
// The page's client (our own, not phoenix.js) must keep the same presences as phoenix.js's
// Presence.syncState / syncDiff, including the order of keys and of metas. Each round starts
// from the same state on both sides and applies a random sequence of diffs and states (keys that
// collide with Object.prototype's properties included). One JSON line; exit status 1 on the first
// difference, with the seed and the steps to replay it.

import {readFileSync} from "node:fs"
import vm from "node:vm"
import {Presence} from "phoenix"

const [path, seedText = "1", roundsText = "300"] = process.argv.slice(2)
if(!path){
  console.error("usage: node page_sync_check.mjs PATH/TO/presence.js [SEED] [ROUNDS]")
  process.exit(2)
}

const sandbox = {JSON, Object, Array, Math}
vm.createContext(sandbox)
vm.runInContext(readFileSync(path, "utf8"), sandbox, {filename: path})
const page = sandbox.presenceSync
if(!page || typeof page.syncState !== "function" || typeof page.syncDiff !== "function"){
  console.log(JSON.stringify({ok: false, error: "presence.js exports no presenceSync"}))
  process.exit(1)
}

// mulberry32: a small seeded generator, so that a failure replays from its seed.
function generator(seed){
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const seed = Number(seedText)
const rounds = Number(roundsText)
const random = generator(seed)
const pick = items => items[Math.floor(random() * items.length)]
const KEYS = ["alice", "bob", "10", "2", "__proto__", "constructor", "carol"]
let refs = 0

function meta(ref){ return {phx_ref: ref, status: pick(["online", "away"])} }

function presences(known){
  // Some keys, each with 1 to 3 metas: refs fresh or already seen (a state may repeat them).
  const out = JSON.parse("{}")
  for(const key of KEYS){
    if(random() < 0.5){ continue }
    const metas = []
    const count = 1 + Math.floor(random() * 3)
    for(let i = 0; i < count; i++){
      const ref = known.length && random() < 0.4 ? pick(known) : `r${++refs}`
      if(!metas.some(m => m.phx_ref === ref)){ metas.push(meta(ref)) }
    }
    defineKey(out, key, {metas})
  }
  return out
}

// Plain objects as JSON.parse makes them: "__proto__" is an own key, not the prototype.
function defineKey(object, key, value){
  Object.defineProperty(object, key, {value, enumerable: true, writable: true, configurable: true})
}

function refsIn(state){
  return Object.getOwnPropertyNames(state).flatMap(key => state[key].metas.map(m => m.phx_ref))
}

// Key order and meta order as phoenix.js's list gives them.
function listed(state){ return JSON.stringify(Presence.list(state, (key, p) => [key, p])) }

const steps = []
let checked = 0
for(let round = 0; round < rounds; round++){
  let ours = Object.create(null)
  let theirs = Object.create(null)
  steps.length = 0
  for(let i = 0; i < 8; i++){
    const known = refsIn(theirs)
    let step
    if(random() < 0.3){
      step = {state: presences(known)}
    } else {
      step = {diff: {joins: presences(known), leaves: presences(known)}}
    }
    const text = JSON.stringify(step)
    steps.push(text)
    // Each side gets its own copy, parsed from the same text, as it would come off the wire.
    const forOurs = JSON.parse(text)
    const forTheirs = JSON.parse(text)
    if(step.state){
      ours = page.syncState(ours, forOurs.state)
      theirs = Presence.syncState(theirs, forTheirs.state)
    } else {
      ours = page.syncDiff(ours, forOurs.diff)
      theirs = Presence.syncDiff(theirs, forTheirs.diff)
    }
    checked += 1
    if(listed(ours) !== listed(theirs)){
      console.log(JSON.stringify({ok: false, seed, round, steps, ours: listed(ours), phoenix: listed(theirs)}))
      process.exit(1)
    }
  }
}
console.log(JSON.stringify({ok: true, seed, rounds, steps: checked}))
