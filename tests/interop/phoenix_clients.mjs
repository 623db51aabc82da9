// Real phoenix.js clients against presence-core's Phoenix Channels endpoint.
//
//     node phoenix_clients.mjs [--updates] http://127.0.0.1:PORT_A http://127.0.0.1:PORT_B
//
// Each URL is one server node of one cluster. Every server serves the endpoint at /socket (so
// phoenix.js connects to /socket/websocket) and, for this test only, GET /list?topic=T with the
// JSON of the node's presence.list(T). Several phoenix.js Sockets (the official client, from the
// `phoenix` npm package, over the `ws` package's WebSocket) join "room:lobby" on both nodes with a
// phoenix.js Presence each, then leave, disconnect, drop and reconnect. After every step the
// script waits, up to a deadline, until both servers list the same presences and every client's
// Presence.list() equals them (keys and metas compared as sets), and until the expected users are
// there. It prints one JSON line per step and exits with 1 on a mismatch, a timeout or a frame
// that a Phoenix server would not send (checked on every frame each client receives), 2 on a
// usage error.
//
// With --updates, the servers handle a custom channel event "status" (payload {"status": S}) by
// updating the sender's presence meta (status: S) and replying {"status": S}: the update step
// runs only then.

import {Presence, Socket} from "phoenix"
import WebSocket from "ws"

import {canonical, canonicalPresences, clientPresences, emit, isObject, leave as leaveWithin, serverList, sleep} from "./phoenix_support.mjs"

const TOPIC = "room:lobby"
const STEP_DEADLINE_MS = Number(process.env.STEP_DEADLINE_MS || 15000)
const POLL_MS = 20
const HEARTBEAT_MS = 1000

const args = process.argv.slice(2)
const updates = args.includes("--updates")
const urls = args.filter(arg => !arg.startsWith("--"))
if(urls.length !== 2 || !urls.every(url => /^https?:\/\//.test(url))){
  console.error("usage: node phoenix_clients.mjs [--updates] http://HOST:PORT_A http://HOST:PORT_B")
  process.exit(2)
}

const started = Date.now()
const violations = []
const observations = []
const received = Object.create(null)

function violation(client, text, frame){
  violations.push({client: client.name, text, frame})
}

function observe(text){
  if(!observations.includes(text)){ observations.push(text) }
}

// ----------------------------------------------------------------------------- summaries

function summary(presences){
  const out = {}
  for(const key of Object.keys(presences).sort()){ out[key] = presences[key].metas.length }
  return out
}

// ----------------------------------------------------------------------------- clients

// A WebSocket class for one client: the `ws` package's, recording every frame both ways so that
// each one can be checked against what a Phoenix server sends.
function recordingTransport(client){
  return class RecordingWebSocket extends WebSocket {
    constructor(url, protocols){
      super(url, protocols)
      const connection = {sent: new Map(), joins: new Map(), replied: new Set(), closed: new Set()}
      client.connections.push(connection)
      this.addEventListener("message", event => checkIncoming(client, connection, event.data))
      this.sendFrame = data => checkOutgoing(connection, data)
    }

    send(data, ...rest){
      this.sendFrame(data)
      return super.send(data, ...rest)
    }
  }
}

function checkOutgoing(connection, data){
  const [joinRef, ref, topic, event] = JSON.parse(data)
  connection.sent.set(ref, {joinRef, topic, event})
  if(event === "phx_join"){ connection.joins.set(topic, joinRef) }
}

function checkPresences(client, presences, frame){
  if(!isObject(presences)){ return violation(client, "presences are not an object", frame) }
  for(const [key, presence] of Object.entries(presences)){
    if(!isObject(presence) || !Array.isArray(presence.metas)){
      violation(client, `presence ${key} has no metas list`, frame)
    } else if(!presence.metas.every(meta => isObject(meta) && typeof meta.phx_ref === "string")){
      violation(client, `a meta of ${key} has no phx_ref string`, frame)
    }
  }
}

// What a Phoenix server sends over the V2 JSON serializer, frame by frame (SPEC §5.4).
function checkIncoming(client, connection, data){
  if(typeof data !== "string"){ return violation(client, "a binary frame", String(data)) }
  let frame
  try { frame = JSON.parse(data) } catch(_error){ return violation(client, "not JSON", data) }
  if(!Array.isArray(frame) || frame.length !== 5){ return violation(client, "not a V2 array frame", data) }
  const [joinRef, ref, topic, event, payload] = frame
  received[event] = (received[event] || 0) + 1
  if(typeof topic !== "string" || typeof event !== "string"){ return violation(client, "topic or event not a string", data) }
  if(!isObject(payload)){ return violation(client, "payload not an object", data) }
  const current = connection.joins.get(topic)
  switch(event){
    case "phx_reply": {
      const sent = connection.sent.get(ref)
      if(sent === undefined){ return violation(client, "a reply to a ref never sent", data) }
      if(sent.topic !== topic){ violation(client, `a reply on ${topic} to a push on ${sent.topic}`, data) }
      if(joinRef !== sent.joinRef){ violation(client, `reply join_ref ${joinRef}, the push had ${sent.joinRef}`, data) }
      if(!["ok", "error"].includes(payload.status) || !isObject(payload.response)){
        violation(client, "a reply without status ok/error and a response object", data)
      }
      if(sent.event === "heartbeat" && (topic !== "phoenix" || payload.status !== "ok" || canonical(payload.response) !== "{}")){
        violation(client, "a heartbeat reply other than {status: ok, response: {}}", data)
      }
      if(sent.event === "phx_join" && payload.status === "ok"){ connection.replied.add(sent.joinRef) }
      break
    }
    case "presence_state":
      if(ref !== null){ violation(client, "presence_state with a ref (Phoenix: null)", data) }
      if(joinRef !== current){ violation(client, `presence_state join_ref ${joinRef}, the current join is ${current}`, data) }
      if(!connection.replied.has(joinRef)){ violation(client, "presence_state before the join's ok reply", data) }
      checkPresences(client, payload, data)
      break
    case "presence_diff":
      if(joinRef !== null || ref !== null){ violation(client, "presence_diff with a join_ref or ref (Phoenix: null, null)", data) }
      if(!isObject(payload.joins) || !isObject(payload.leaves)){ violation(client, "presence_diff without joins and leaves objects", data) }
      checkPresences(client, payload.joins || {}, data)
      checkPresences(client, payload.leaves || {}, data)
      break
    case "phx_close":
      if(joinRef === null || ref !== joinRef){ violation(client, "phx_close whose ref is not its join_ref", data) }
      connection.closed.add(`${topic} ${joinRef}`)
      break
    case "phx_error":
      violation(client, "phx_error (a channel crashed on the server)", data)
      break
    default:
      violation(client, `unexpected event ${event}`, data)
  }
}

const clients = []

function makeClient(name, node, {user = name, topic = TOPIC} = {}){
  const client = {name, node, user, topic, connections: [], active: false, socket: null, channel: null, presence: null, closes: 0, expectedCloses: 0}
  client.socket = new Socket(urls[node].replace(/^http/, "ws") + "/socket", {
    transport: recordingTransport(client),
    params: {client: name},
    heartbeatIntervalMs: HEARTBEAT_MS,
  })
  client.socket.onClose(() => { client.closes += 1 })
  const payload = user === null ? {} : {user}
  client.channel = client.socket.channel(topic, payload)
  client.presence = new Presence(client.channel)
  clients.push(client)
  return client
}

// Join and wait for the server's answer: "ok" (then the client is compared with the servers from
// now on) or "error" with its response.
function join(client){
  client.socket.connect()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${client.name}: no join reply`)), STEP_DEADLINE_MS)
    client.channel.join()
      .receive("ok", response => { clearTimeout(timer); client.active = true; resolve({status: "ok", response}) })
      .receive("error", response => { clearTimeout(timer); resolve({status: "error", response}) })
  })
}

function push(client, event, payload){
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${client.name}: no reply to ${event}`)), STEP_DEADLINE_MS)
    client.channel.push(event, payload)
      .receive("ok", response => { clearTimeout(timer); resolve({status: "ok", response}) })
      .receive("error", response => { clearTimeout(timer); resolve({status: "error", response}) })
  })
}

const leave = client => leaveWithin(client, STEP_DEADLINE_MS)

function disconnect(client){
  client.active = false
  client.expectedCloses += 1
  return new Promise(resolve => client.socket.disconnect(resolve))
}

function ping(client){
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${client.name}: no heartbeat reply`)), STEP_DEADLINE_MS)
    if(!client.socket.ping(rtt => { clearTimeout(timer); resolve(rtt) })){
      clearTimeout(timer)
      reject(new Error(`${client.name}: not connected`))
    }
  })
}

// ----------------------------------------------------------------------------- waiting

function fail(step, error, extra = {}){
  emit({step, ok: false, error, ...extra, violations: violations.slice(0, 20), observations})
  process.exit(1)
}

// Wait until both servers agree, every active client agrees with them (and has its state, no
// buffered diffs), and `expected(servers' presences)` holds.
async function converged(step, expected){
  const deadline = Date.now() + STEP_DEADLINE_MS
  const since = Date.now()
  for(;;){
    const servers = await Promise.all(urls.map(url => serverList(url, TOPIC)))
    const reference = canonicalPresences(servers[0])
    const problems = []
    if(canonicalPresences(servers[1]) !== reference){ problems.push("the servers differ") }
    for(const client of clients.filter(c => c.active)){
      if(client.presence.inPendingSyncState()){ problems.push(`${client.name} waits for its presence_state`) }
      else if(canonicalPresences(clientPresences(client)) !== reference){ problems.push(`${client.name} differs from the servers`) }
    }
    const unexpected = expected(servers[0])
    if(unexpected){ problems.push(unexpected) }
    if(problems.length === 0){
      emit({step, ok: true, ms: Date.now() - since, presences: summary(servers[0])})
      return servers[0]
    }
    if(Date.now() > deadline){
      const views = {}
      for(const client of clients.filter(c => c.active)){ views[client.name] = clientPresences(client) }
      fail(step, `not converged within ${STEP_DEADLINE_MS} ms: ${problems.join("; ")}`, {servers, clients: views})
    }
    await sleep(POLL_MS)
  }
}

// An expectation: exactly these keys, with these numbers of metas.
function exactly(counts){
  return presences => {
    const got = summary(presences)
    return canonical(got) === canonical(counts) ? null : `expected ${canonical(counts)}, the servers have ${canonical(got)}`
  }
}

// ----------------------------------------------------------------------------- the scenario

async function scenario(){
  // alice has two tabs, one on each node: one key, two metas.
  const alice1 = makeClient("alice-1", 0, {user: "alice"})
  const bob = makeClient("bob", 1)
  const carol = makeClient("carol", 0)
  const alice2 = makeClient("alice-2", 1, {user: "alice"})

  for(const client of [alice1, bob, carol, alice2]){
    const reply = await join(client)
    if(reply.status !== "ok"){ fail("join", `${client.name}'s join was refused: ${canonical(reply.response)}`) }
  }
  await converged("join", exactly({alice: 2, bob: 1, carol: 1}))

  // The app refuses a join without a user, and any topic but room:*.
  for(const [name, options] of [["anonymous", {user: null}], ["intruder", {topic: "secret:vault"}]]){
    const client = makeClient(name, 0, options)
    const reply = await join(client)
    if(reply.status !== "error" || canonical(reply.response) !== canonical({reason: "unauthorized"})){
      fail("rejected join", `${name}: expected an error reply {reason: unauthorized}, got ${canonical(reply)}`)
    }
    await disconnect(client)
  }
  await converged("rejected join", exactly({alice: 2, bob: 1, carol: 1}))

  const rtts = await Promise.all([alice1, bob, carol, alice2].map(ping))
  emit({step: "heartbeat", ok: true, rtt_ms: rtts})

  if(updates){
    const reply = await push(bob, "status", {status: "away"})
    if(reply.status !== "ok"){ fail("update", `bob's status push was refused: ${canonical(reply.response)}`) }
    await converged("update", presences => {
      const metas = (presences.bob || {metas: []}).metas
      if(metas.length !== 1 || metas[0].status !== "away"){ return `bob's meta is ${canonical(metas)}, expected status away` }
      if(typeof metas[0].phx_ref_prev !== "string"){ return "bob's updated meta has no phx_ref_prev" }
      return exactly({alice: 2, bob: 1, carol: 1})(presences)
    })
  } else {
    emit({step: "update", ok: true, skipped: "the servers offer no on_event hook (run with --updates)"})
  }

  await leave(carol)
  await converged("leave", exactly({alice: 2, bob: 1}))

  await disconnect(bob)
  await converged("disconnect", exactly({alice: 2}))

  // A network drop: the TCP connection dies without a close frame. phoenix.js reconnects on its
  // own and rejoins with a new join ref; the server must have dropped the old presence.
  const droppedRef = alice2.channel.joinRef()
  const before = (await serverList(urls[1], TOPIC)).alice.metas.map(meta => meta.phx_ref)
  alice2.expectedCloses += 1
  alice2.socket.conn.terminate()
  await converged("network drop and automatic rejoin", presences => {
    if(alice2.channel.joinRef() === droppedRef){ return "alice-2 has not rejoined yet" }
    const refs = ((presences.alice || {metas: []}).metas).map(meta => meta.phx_ref)
    if(refs.length !== 2 || refs.every(ref => before.includes(ref))){ return `alice's metas are ${canonical(refs)}: the rejoin is not tracked yet` }
    return null
  })

  // A reconnect with changes while away: alice-1 disconnects, dave joins on the other node and
  // alice-2 leaves; alice-1 connects again, rejoins with a new join ref and must end with the
  // servers' state (phoenix.js syncState, plus the diffs it buffered until that state).
  const oldRef = alice1.channel.joinRef()
  await disconnect(alice1)
  const dave = makeClient("dave", 1)
  if((await join(dave)).status !== "ok"){ fail("changes while alice-1 is away", "dave's join was refused") }
  await leave(alice2)
  await converged("changes while alice-1 is away", exactly({dave: 1}))
  alice1.socket.connect()
  alice1.active = true
  await converged("reconnect with a new join ref", presences => {
    if(alice1.channel.joinRef() === oldRef){ return "alice-1 has not rejoined yet" }
    if(alice1.presence.joinRef !== alice1.channel.joinRef()){ return "alice-1's Presence has not seen the new presence_state" }
    return exactly({alice: 1, dave: 1})(presences)
  })

  await Promise.all(clients.filter(client => client.socket.isConnected()).map(disconnect))
  await converged("everyone gone", exactly({}))

  const unexpected = clients.filter(client => client.closes > client.expectedCloses)
  for(const client of unexpected){
    violation(client, `${client.closes - client.expectedCloses} unexpected connection close(s) (a heartbeat timeout?)`, null)
  }
  for(const client of clients){
    for(const connection of client.connections){
      for(const [ref, sent] of connection.sent){
        if(sent.event === "phx_leave" && !connection.closed.has(`${sent.topic} ${sent.joinRef}`)){
          observe(`no phx_close after the phx_leave reply (Phoenix sends [join_ref, join_ref, topic, "phx_close", {}]); leave ref ${ref}`)
        }
      }
    }
  }
}

scenario().then(() => {
  emit({step: "frames", ok: violations.length === 0, received, violations: violations.slice(0, 20), observations})
  emit({done: true, ok: violations.length === 0, ms: Date.now() - started})
  process.exit(violations.length === 0 ? 0 : 1)
}, error => fail("scenario", String(error && error.stack || error)))
