// Real phoenix.js clients in a large room: batched diffs and a leave grace period.
//
//     node phoenix_large_room.mjs http://127.0.0.1:PORT_A http://127.0.0.1:PORT_B
//
// Each URL is one server node of one cluster, serving the Phoenix endpoint at /socket and, for
// this test only, GET /list?topic=T (the JSON of the node's presence.list(T)). The servers run the
// topic "room:big" as a large room (one presence_diff per tick, the net effect of the tick) with
// a leave grace period of GRACE_MS (environment; the servers must use the same).
//
// Many phoenix.js Sockets (the official client, over the `ws` package) join, leave, disconnect,
// move to the other node and come back, most of them at once. Two watchers (one per node) stay
// from the first step to the last, and two counters join with {presence: "occupancy"} and keep
// only the last presence_occupancy push. After each step the script waits, up to a deadline,
// until both servers list the same presences, every client's Presence.list() equals that list
// (keys and metas compared as sets) and every counter's last counts equal its counts. At the end
// it checks that:
// - the watchers received fewer presence_diff pushes than there were changes, and, while the
//   crowd joined, fewer than the joins on their own node (each of which is a presence_diff of
//   its own without batching);
// - no watcher ever saw a user who moved to the other node within the grace period leave
//   (phoenix.js's onLeave with no meta left), and each user who really left, leave once;
// - every frame is one a Phoenix server could send (null refs on presence_diff, the channel's
//   join_ref on presence_state and presence_occupancy, counts as integers).
// It prints one JSON line per step and a summary line, and exits with 1 on a failure, 2 on a
// usage error.

import {Presence, Socket} from "phoenix"
import WebSocket from "ws"

import {canonical, canonicalPresences, clientPresences, emit, isObject, leave as leaveWithin, serverList, sleep} from "./phoenix_support.mjs"

const TOPIC = "room:big"
const GRACE_MS = Number(process.env.GRACE_MS || 1000)
const STEP_DEADLINE_MS = Number(process.env.STEP_DEADLINE_MS || 20000)
const CROWD = Number(process.env.CROWD || 40)
const POLL_MS = 20
const HEARTBEAT_MS = 1000

const urls = process.argv.slice(2)
if(urls.length !== 2 || !urls.every(url => /^https?:\/\//.test(url))){
  console.error("usage: node phoenix_large_room.mjs http://HOST:PORT_A http://HOST:PORT_B")
  process.exit(2)
}

const started = Date.now()
const violations = []
const received = Object.create(null)

function violation(client, text, frame){
  if(violations.length < 50){ violations.push({client: client.name, text, frame}) }
}

// ----------------------------------------------------------------------------- summaries

function countsOf(presences){
  const keys = Object.keys(presences)
  return {keys: keys.length, presences: keys.reduce((sum, key) => sum + presences[key].metas.length, 0)}
}

// ----------------------------------------------------------------------------- clients

function recordingTransport(client){
  return class RecordingWebSocket extends WebSocket {
    constructor(url, protocols){
      super(url, protocols)
      const joins = new Map()
      this.addEventListener("message", event => checkIncoming(client, joins, event.data))
      this.noteOutgoing = data => {
        const [joinRef, , topic, event] = JSON.parse(data)
        if(event === "phx_join"){ joins.set(topic, joinRef) }
      }
    }

    send(data, ...rest){
      this.noteOutgoing(data)
      return super.send(data, ...rest)
    }
  }
}

function checkIncoming(client, joins, data){
  let frame
  try { frame = JSON.parse(data) } catch(_error){ return violation(client, "not JSON", data) }
  if(!Array.isArray(frame) || frame.length !== 5){ return violation(client, "not a V2 array frame", data) }
  const [joinRef, ref, topic, event, payload] = frame
  received[event] = (received[event] || 0) + 1
  if(!isObject(payload)){ return violation(client, "payload not an object", data) }
  if(topic !== TOPIC){ return }
  switch(event){
    case "presence_diff":
      client.diffs += 1
      if(joinRef !== null || ref !== null){ violation(client, "presence_diff with a join_ref or ref", data) }
      if(!isObject(payload.joins) || !isObject(payload.leaves)){ violation(client, "presence_diff without joins and leaves", data) }
      if(client.counter){ violation(client, "presence_diff on an occupancy channel", data) }
      break
    case "presence_state":
      if(ref !== null || joinRef !== joins.get(topic)){ violation(client, "presence_state without the channel's join_ref", data) }
      if(client.counter){ violation(client, "presence_state on an occupancy channel", data) }
      break
    case "presence_occupancy":
      client.occupancies += 1
      if(ref !== null || joinRef !== joins.get(topic)){ violation(client, "presence_occupancy without the channel's join_ref", data) }
      if(!Number.isInteger(payload.keys) || !Number.isInteger(payload.presences) || Object.keys(payload).length !== 2){
        violation(client, "presence_occupancy is not {keys, presences}", data)
      }
      if(!client.counter){ violation(client, "presence_occupancy on a full channel", data) }
      break
    case "phx_reply":
    case "phx_close":
      break
    default:
      violation(client, `unexpected event ${event}`, data)
  }
}

const clients = []

// A client of node `node` joining TOPIC as `user`: with a phoenix.js Presence, or (counter) with
// {presence: "occupancy"}, keeping the last counts pushed.
function makeClient(name, node, {user = name, counter = false} = {}){
  const client = {name, node, user, counter, active: false, diffs: 0, occupancies: 0, counts: null, gone: Object.create(null), closes: 0}
  client.socket = new Socket(urls[node].replace(/^http/, "ws") + "/socket", {
    transport: recordingTransport(client),
    params: {client: name},
    heartbeatIntervalMs: HEARTBEAT_MS,
  })
  const payload = counter ? {user, presence: "occupancy"} : {user}
  client.channel = client.socket.channel(TOPIC, payload)
  if(counter){
    client.channel.on("presence_occupancy", counts => { client.counts = counts })
  } else {
    client.presence = new Presence(client.channel)
    client.presence.onLeave((key, current) => {
      if(current.metas.length === 0){ client.gone[key] = (client.gone[key] || 0) + 1 }
    })
  }
  clients.push(client)
  return client
}

function join(client){
  client.socket.connect()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${client.name}: no join reply`)), STEP_DEADLINE_MS)
    client.channel.join()
      .receive("ok", () => { clearTimeout(timer); client.active = true; resolve() })
      .receive("error", response => { clearTimeout(timer); reject(new Error(`${client.name}: join refused ${canonical(response)}`)) })
  })
}

const leave = client => leaveWithin(client, STEP_DEADLINE_MS)

function disconnect(client){
  client.active = false
  return new Promise(resolve => client.socket.disconnect(resolve))
}

// ----------------------------------------------------------------------------- waiting

function fail(step, error, extra = {}){
  emit({step, ok: false, error, ...extra, violations})
  process.exit(1)
}

// Wait until both servers agree, every active client agrees with them, and the servers hold
// exactly the users `expected` names (one meta each).
async function converged(step, expected, details = () => ({})){
  const deadline = Date.now() + STEP_DEADLINE_MS
  const since = Date.now()
  const wanted = canonical([...expected].sort())
  for(;;){
    const servers = await Promise.all(urls.map(url => serverList(url, TOPIC)))
    const reference = canonicalPresences(servers[0])
    const counts = countsOf(servers[0])
    const problems = []
    if(canonicalPresences(servers[1]) !== reference){ problems.push("the servers differ") }
    if(canonical(Object.keys(servers[0]).sort()) !== wanted){ problems.push(`the servers list ${Object.keys(servers[0]).length} users, not the ${expected.size} expected`) }
    if(counts.presences !== counts.keys){ problems.push("a user has several metas") }
    for(const client of clients.filter(c => c.active)){
      if(client.counter){
        if(canonical(client.counts) !== canonical(counts)){ problems.push(`${client.name} counts ${canonical(client.counts)}`) }
      } else if(client.presence.inPendingSyncState()){
        problems.push(`${client.name} waits for its presence_state`)
      } else if(canonicalPresences(clientPresences(client)) !== reference){
        problems.push(`${client.name} differs from the servers`)
      }
    }
    if(problems.length === 0){
      emit({step, ok: true, ms: Date.now() - since, users: counts.keys, ...details()})
      return
    }
    if(Date.now() > deadline){
      fail(step, `not converged within ${STEP_DEADLINE_MS} ms: ${[...new Set(problems)].slice(0, 10).join("; ")}`)
    }
    await sleep(POLL_MS)
  }
}

// ----------------------------------------------------------------------------- the scenario

const present = new Set()
let changes = 0 // presences joining or leaving the topic since the watchers are all in

async function scenario(){
  const watchers = [makeClient("watch-a", 0), makeClient("watch-b", 1)]
  const counters = [makeClient("count-a", 0, {counter: true}), makeClient("count-b", 1, {counter: true})]
  for(const client of [...watchers, ...counters]){
    await join(client)
    present.add(client.user)
  }
  await converged("watchers", present)

  // A crowd joins, half on each node, all at once. Without batching, each join on a watcher's
  // own node is a presence_diff of its own; batched, a tick's joins are one.
  const crowd = []
  for(let i = 0; i < CROWD; i++){ crowd.push(makeClient(`u${String(i).padStart(2, "0")}`, i % 2)) }
  const before = watchers.map(watcher => watcher.diffs)
  await Promise.all(crowd.map(join))
  for(const client of crowd){ present.add(client.user) }
  changes += crowd.length
  await converged("crowd joins", present, () => ({
    diffs: Object.fromEntries(watchers.map((watcher, i) => [watcher.name, watcher.diffs - before[i]])),
    local_joins: Object.fromEntries(watchers.map(watcher => [watcher.name, crowd.filter(client => client.node === watcher.node).length])),
  }))

  // A quarter leave their channel and a quarter close their socket, all at once: every leave is
  // held for the grace period, then delivered once.
  const quarter = Math.floor(CROWD / 4)
  const leavers = crowd.slice(0, quarter)
  const closers = crowd.slice(quarter, 2 * quarter)
  await Promise.all([...leavers.map(leave), ...closers.map(disconnect)])
  for(const client of [...leavers, ...closers]){ present.delete(client.user) }
  changes += leavers.length + closers.length
  await converged("leaves and disconnects", present)

  // Handovers: users reconnect to the other node within the grace period (a deploy, a network
  // change). No watcher may see them leave.
  const movers = crowd.slice(2 * quarter, 2 * quarter + Math.max(2, Math.floor(quarter / 2)))
  const moved = []
  await Promise.all(movers.map(async client => {
    await disconnect(client)
    const again = makeClient(`${client.name}-moved`, 1 - client.node, {user: client.user})
    moved.push(again)
    await join(again)
  }))
  changes += 2 * movers.length
  await converged("handover within the grace period", present)

  // Churn: newcomers join while as many others leave, at once.
  const stayers = crowd.slice(2 * quarter + movers.length)
  const churners = stayers.slice(0, Math.min(10, stayers.length))
  const newcomers = churners.map((_, i) => makeClient(`n${String(i).padStart(2, "0")}`, i % 2))
  await Promise.all([...newcomers.map(join), ...churners.map(leave)])
  for(const client of churners){ present.delete(client.user) }
  for(const client of newcomers){ present.add(client.user) }
  changes += churners.length + newcomers.length
  await converged("churn", present)
  // The churners' leaves were held for the grace period: a mover's leave would have come by now.
  for(const watcher of watchers){
    for(const mover of movers){
      if(watcher.gone[mover.user]){ violation(watcher, `saw ${mover.user} leave while moving to the other node within the grace period`, null) }
    }
  }

  // Everyone but the watchers and counters goes.
  const rest = clients.filter(client => client.active && !watchers.includes(client) && !counters.includes(client))
  await Promise.all(rest.map(disconnect))
  for(const client of rest){ present.delete(client.user) }
  changes += rest.length
  await converged("the crowd is gone", present)

  for(const watcher of watchers){
    for(const client of [...leavers, ...closers, ...churners, ...rest]){
      if(watcher.gone[client.user] !== 1){ violation(watcher, `saw ${client.user} leave ${watcher.gone[client.user] || 0} times, not once`, null) }
    }
  }
  const diffs = Object.fromEntries(watchers.map(watcher => [watcher.name, watcher.diffs]))
  const occupancies = Object.fromEntries(counters.map(counter => [counter.name, counter.occupancies]))
  const batched = watchers.every(watcher => watcher.diffs < changes) && counters.every(counter => counter.occupancies <= changes)
  emit({step: "batching", ok: batched, changes, diffs, occupancies})
  if(!batched){ fail("batching", `as many presence_diff pushes as changes: ${canonical(diffs)} for ${changes} changes`) }

  await Promise.all(clients.filter(client => client.socket.isConnected()).map(disconnect))
  present.clear()
  await converged("everyone gone", present)
}

scenario().then(() => {
  emit({step: "frames", ok: violations.length === 0, received, violations})
  emit({done: true, ok: violations.length === 0, ms: Date.now() - started})
  process.exit(violations.length === 0 ? 0 : 1)
}, error => fail("scenario", String(error && error.stack || error)))
