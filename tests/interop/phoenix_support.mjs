// What the phoenix.js interop scripts share: canonical forms to compare presence maps, reading a
// server node's list, and the client steps that do not depend on a script's own bookkeeping.

// One JSON line on stdout: what the Python side of a test reads.
export function emit(line){ process.stdout.write(JSON.stringify(line) + "\n") }

export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

export function isObject(value){ return value !== null && typeof value === "object" && !Array.isArray(value) }

// JSON with object keys sorted at every level: equal values give equal strings, whatever the key
// order each side produced.
export function canonical(value){
  if(Array.isArray(value)){ return "[" + value.map(canonical).join(",") + "]" }
  if(value !== null && typeof value === "object"){
    return "{" + Object.keys(value).sort().map(key => JSON.stringify(key) + ":" + canonical(value[key])).join(",") + "}"
  }
  return JSON.stringify(value)
}

// A presence map ({key: {metas: [...], ...}}) with each key's metas sorted: metas compare as a set.
export function canonicalPresences(presences){
  const out = {}
  for(const key of Object.keys(presences).sort()){
    const presence = presences[key]
    const metas = (presence.metas || []).map(canonical).sort()
    out[key] = canonical({...presence, metas: metas.map(text => JSON.parse(text))})
  }
  return canonical(out)
}

// A server node's presences in `topic`: GET /list, which the interop tests' servers serve.
export async function serverList(url, topic){
  const response = await fetch(`${url}/list?topic=${encodeURIComponent(topic)}`)
  if(!response.ok){ throw new Error(`GET ${url}/list: HTTP ${response.status}`) }
  return response.json()
}

// What a client's phoenix.js Presence lists, as a presence map.
export function clientPresences(client){
  const out = {}
  client.presence.list((key, presence) => { out[key] = presence })
  return out
}

// Leave the client's channel and wait for the server's reply, up to `deadlineMs`; the client is
// no longer compared with the servers from now on.
export function leave(client, deadlineMs){
  client.active = false
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${client.name}: no reply to phx_leave`)), deadlineMs)
    client.channel.leave().receive("ok", () => { clearTimeout(timer); resolve() })
  })
}
