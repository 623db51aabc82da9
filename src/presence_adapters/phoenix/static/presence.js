// The presence page's client: who is online in a room, live.
//
// A small client of the Phoenix Channels protocol, version 2 (frames are JSON arrays
// [join_ref, ref, topic, event, payload]) over the browser's WebSocket, written for this page:
// it joins one topic, answers for its heartbeats, and keeps the room's presences from the
// server's presence_state and presence_diff pushes with phoenix.js's sync semantics (a state
// replaces what the client knew, reporting the differences; a diff applies joins, then leaves,
// matching metas by phx_ref; diffs that arrive before the state of the current join wait for it).
//
// The sync functions are also exported as `presenceSync` on the global object, and the page part
// runs only where there is a document: tests compare them with phoenix.js's under Node.
"use strict";

(function(global){
  const HEARTBEAT_MS = 30000
  const RECONNECT_MS = [100, 500, 1000, 2000, 5000]
  const REJOIN_MS = [1000, 2000, 5000, 10000]

  // ------------------------------------------------------------------ presence sync

  // Objects indexed by presence key have no prototype, so a key such as "__proto__" is a key.
  function table(){ return Object.create(null) }

  function clone(value){ return JSON.parse(JSON.stringify(value)) }

  function refsOf(presence){ return presence.metas.map(meta => meta.phx_ref) }

  // Apply one diff to the state (mutated and returned): joins first, then leaves.
  function syncDiff(state, diff){
    const joins = clone(diff.joins || {})
    const leaves = clone(diff.leaves || {})
    for(const key of Object.keys(joins)){
      const joined = joins[key]
      const current = state[key]
      if(current){
        const joinedRefs = refsOf(joined)
        const kept = current.metas.filter(meta => !joinedRefs.includes(meta.phx_ref))
        joined.metas = kept.concat(joined.metas)
      }
      state[key] = joined
    }
    for(const key of Object.keys(leaves)){
      const current = state[key]
      if(!current){ continue }
      const leftRefs = refsOf(leaves[key])
      current.metas = current.metas.filter(meta => !leftRefs.includes(meta.phx_ref))
      if(current.metas.length === 0){ delete state[key] }
    }
    return state
  }

  // Replace the state by the server's, as the diff between the two (so that the same joins and
  // leaves would be reported as with diffs).
  function syncState(current, incoming){
    const state = table()
    for(const key of Object.keys(current)){ state[key] = clone(current[key]) }
    const joins = table()
    const leaves = table()
    for(const key of Object.keys(state)){
      if(!Object.prototype.hasOwnProperty.call(incoming, key)){ leaves[key] = state[key] }
    }
    for(const key of Object.keys(incoming)){
      const next = incoming[key]
      const known = state[key]
      if(!known){
        joins[key] = next
        continue
      }
      const nextRefs = refsOf(next)
      const knownRefs = refsOf(known)
      const joined = next.metas.filter(meta => !knownRefs.includes(meta.phx_ref))
      const left = known.metas.filter(meta => !nextRefs.includes(meta.phx_ref))
      if(joined.length > 0){ joins[key] = Object.assign({}, next, {metas: joined}) }
      if(left.length > 0){ leaves[key] = Object.assign({}, known, {metas: left}) }
    }
    return syncDiff(state, {joins, leaves})
  }

  global.presenceSync = {syncState, syncDiff}

  // ------------------------------------------------------------------ the channel client

  class RoomClient {
    constructor(url, onChange){
      this.url = url
      this.onChange = onChange
      this.ws = null
      this.ref = 0
      this.topic = null
      this.params = null
      this.joinRef = null          // the ref of the current join push
      this.joined = false
      this.stateJoinRef = null     // the join whose presence_state the state reflects
      this.state = table()
      this.pendingDiffs = []
      this.pendingHeartbeat = null
      this.heartbeatTimer = null
      this.retryTimer = null
      this.reconnects = 0
      this.rejoins = 0
      this.status = {state: "idle", text: "Not joined"}
    }

    makeRef(){
      this.ref += 1
      return String(this.ref)
    }

    setStatus(state, text){
      this.status = {state, text}
      this.onChange()
    }

    send(joinRef, ref, topic, event, payload){
      if(this.ws && this.ws.readyState === WebSocket.OPEN){
        this.ws.send(JSON.stringify([joinRef, ref, topic, event, payload]))
      }
    }

    // Join `topic` with `params`, leaving the topic joined before (if any).
    join(topic, params){
      if(this.topic !== null && this.joinRef !== null){
        this.send(this.joinRef, this.makeRef(), this.topic, "phx_leave", {})
      }
      if(topic !== this.topic){
        this.state = table()
        this.pendingDiffs = []
      }
      this.topic = topic
      this.params = params
      this.joinRef = null
      this.joined = false
      this.stateJoinRef = null
      clearTimeout(this.retryTimer)
      this.rejoins = 0
      if(this.ws && this.ws.readyState === WebSocket.OPEN){
        this.pushJoin()
      } else if(!this.ws || this.ws.readyState !== WebSocket.CONNECTING){
        this.connect()
      }
      this.onChange()
    }

    connect(){
      this.setStatus("connecting", "Connecting…")
      const ws = new WebSocket(this.url)
      this.ws = ws
      ws.onopen = () => {
        if(ws !== this.ws){ return }
        this.reconnects = 0
        this.startHeartbeat()
        if(this.topic !== null){ this.pushJoin() }
      }
      ws.onmessage = event => {
        if(ws === this.ws){ this.receive(event.data) }
      }
      ws.onclose = () => {
        if(ws !== this.ws){ return }
        this.stopHeartbeat()
        this.joined = false
        this.joinRef = null
        const delay = RECONNECT_MS[Math.min(this.reconnects, RECONNECT_MS.length - 1)]
        this.reconnects += 1
        this.setStatus("connecting", "Connection lost; reconnecting…")
        clearTimeout(this.retryTimer)
        this.retryTimer = setTimeout(() => this.connect(), delay)
      }
    }

    pushJoin(){
      const ref = this.makeRef()
      this.joinRef = ref
      this.joined = false
      this.setStatus("connecting", `Joining ${this.topic}…`)
      this.send(ref, ref, this.topic, "phx_join", this.params)
    }

    startHeartbeat(){
      this.stopHeartbeat()
      this.heartbeatTimer = setInterval(() => {
        if(this.pendingHeartbeat !== null){
          // No reply to the previous heartbeat in a whole period: the connection is dead.
          this.pendingHeartbeat = null
          if(this.ws){ this.ws.close(1000, "heartbeat timeout") }
          return
        }
        this.pendingHeartbeat = this.makeRef()
        this.send(null, this.pendingHeartbeat, "phoenix", "heartbeat", {})
      }, HEARTBEAT_MS)
    }

    stopHeartbeat(){
      clearInterval(this.heartbeatTimer)
      this.heartbeatTimer = null
      this.pendingHeartbeat = null
    }

    receive(data){
      let frame
      try { frame = JSON.parse(data) } catch(_error){ return }
      if(!Array.isArray(frame) || frame.length !== 5){ return }
      const [joinRef, ref, topic, event, payload] = frame
      if(topic === "phoenix"){
        if(event === "phx_reply" && ref === this.pendingHeartbeat){ this.pendingHeartbeat = null }
        return
      }
      // A message of another topic, or of an earlier join of this one, is outdated.
      if(topic !== this.topic || (joinRef !== null && joinRef !== this.joinRef)){ return }
      switch(event){
        case "phx_reply":
          if(ref === this.joinRef){ this.joinReplied(payload) }
          break
        case "presence_state":
          this.stateJoinRef = this.joinRef
          this.state = syncState(this.state, payload)
          for(const diff of this.pendingDiffs){ this.state = syncDiff(this.state, diff) }
          this.pendingDiffs = []
          this.onChange()
          break
        case "presence_diff":
          if(this.stateJoinRef === null || this.stateJoinRef !== this.joinRef){
            this.pendingDiffs.push(payload)
          } else {
            this.state = syncDiff(this.state, payload)
            this.onChange()
          }
          break
        case "phx_error":
          // The server's channel crashed: join again, a little later.
          this.joined = false
          this.scheduleRejoin("The room's channel failed; joining again…")
          break
        default:
          break
      }
    }

    joinReplied(payload){
      if(payload && payload.status === "ok"){
        this.joined = true
        this.rejoins = 0
        this.setStatus("joined", `Online in ${this.topic}`)
        return
      }
      const reason = payload && payload.response && payload.response.reason
      this.joinRef = null
      this.setStatus("error", `The server refused to let you in${reason ? ` (${reason})` : ""}.`)
    }

    scheduleRejoin(text){
      const delay = REJOIN_MS[Math.min(this.rejoins, REJOIN_MS.length - 1)]
      this.rejoins += 1
      this.setStatus("connecting", text)
      clearTimeout(this.retryTimer)
      this.retryTimer = setTimeout(() => { if(this.topic !== null){ this.pushJoin() } }, delay)
    }

    // The presences, as [key, presence] sorted by key (case-insensitively).
    list(){
      return Object.keys(this.state)
        .sort((a, b) => a.localeCompare(b, undefined, {sensitivity: "base"}) || (a < b ? -1 : a > b ? 1 : 0))
        .map(key => [key, this.state[key]])
    }
  }

  // ------------------------------------------------------------------ the page

  if(typeof document === "undefined"){ return }

  const byId = id => document.getElementById(id)
  const form = byId("join-form")
  const userInput = byId("user")
  const roomInput = byId("room")
  const statusBox = byId("status")
  const statusText = byId("status-text")
  const roomTitle = byId("room-title")
  const countText = byId("count")
  const list = byId("presences")

  const base = location.pathname.replace(/[^/]*$/, "")
  const scheme = location.protocol === "https:" ? "wss:" : "ws:"
  const client = new RoomClient(`${scheme}//${location.host}${base}socket/websocket?vsn=2.0.0`, render)
  let me = null

  function hue(text){
    let hash = 0
    for(const char of text){ hash = (hash * 31 + char.codePointAt(0)) >>> 0 }
    return hash % 360
  }

  function initials(name){
    const letters = Array.from(name.trim())
    return letters.length ? letters[0].toUpperCase() : "?"
  }

  function render(){
    statusBox.dataset.state = client.status.state
    statusText.textContent = client.status.text
    roomTitle.textContent = client.topic || roomInput.value
    const entries = client.list()
    const connections = entries.reduce((sum, [, presence]) => sum + presence.metas.length, 0)
    countText.textContent = entries.length === 0 ? "nobody online"
      : `${entries.length} online${connections > entries.length ? `, ${connections} connections` : ""}`
    const items = entries.map(([key, presence]) => {
      const item = document.createElement("li")
      item.dataset.key = key
      item.dataset.connections = String(presence.metas.length)
      const avatar = document.createElement("span")
      avatar.className = "avatar"
      avatar.style.background = `hsl(${hue(key)} 55% 48%)`
      avatar.textContent = initials(key)
      const name = document.createElement("span")
      name.className = "name"
      name.textContent = key
      if(key === me){
        const you = document.createElement("span")
        you.className = "you"
        you.textContent = " (you)"
        name.append(you)
      }
      const conns = document.createElement("span")
      conns.className = "conns"
      const n = presence.metas.length
      conns.textContent = n === 1 ? "1 connection" : `${n} connections`
      item.append(avatar, name, conns)
      return item
    })
    if(items.length === 0){
      const empty = document.createElement("li")
      empty.className = "empty"
      empty.textContent = client.joined ? "Nobody is here yet." : "Join a room to see who is online."
      items.push(empty)
    }
    list.replaceChildren(...items)
  }

  function joinFromInputs(){
    const user = userInput.value.trim()
    const room = roomInput.value.trim() || "room:lobby"
    if(!user){ userInput.focus(); return }
    me = user
    const query = new URLSearchParams({room, user})
    history.replaceState(null, "", `${location.pathname}?${query}`)
    client.join(room, {user})
  }

  form.addEventListener("submit", event => {
    event.preventDefault()
    joinFromInputs()
  })

  const query = new URLSearchParams(location.search)
  if(query.get("room")){ roomInput.value = query.get("room") }
  if(query.get("user")){
    userInput.value = query.get("user")
    joinFromInputs()
  } else {
    render()
  }

  // For tests and the curious: the client, from the browser's console.
  global.presenceClient = client
})(typeof window !== "undefined" ? window : globalThis)
