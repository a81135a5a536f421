// Calls to the server's public API (the same routes as the Python SDK), with the server's error text.

/** An error the server answered (status and its {"error","detail"} text) or a network failure. */
export class ApiError extends Error {
  constructor(message, status = 0, kind = '') {
    super(message)
    this.status = status // 0: the server could not be reached
    this.kind = kind
  }
}

const listeners = new Set()

/** Call ``fn(reachable)`` whenever a request reaches the server or fails to. */
export function onReachability(fn) {
  listeners.add(fn)
}

function report(reachable) {
  for (const fn of listeners) fn(reachable)
}

/** The server's own words for a refusal: its JSON ``detail`` or the plain text of the reply. */
export async function errorText(response) {
  const text = await response.text()
  try {
    const body = JSON.parse(text)
    if (body && typeof body.detail === 'string') return [body.detail, body.error || '']
    if (body && Array.isArray(body.detail)) return [body.detail.map((d) => d.msg || JSON.stringify(d)).join('; '), '']
  } catch {
    // not JSON: show the text itself
  }
  return [text.trim() || `${response.status} ${response.statusText}`, '']
}

/** ``fetch`` that throws ApiError for a refusal (status >= 400) or an unreachable server. */
export async function request(path, options = {}) {
  let response
  try {
    response = await fetch(path, options)
  } catch (err) {
    report(false)
    throw new ApiError(`cannot reach the server at ${location.origin} (${err.message})`)
  }
  report(true)
  if (!response.ok) {
    const [detail, kind] = await errorText(response)
    throw new ApiError(`${response.status}: ${detail}`, response.status, kind)
  }
  return response
}

/** JSON of a successful request. */
export async function requestJson(path, options = {}) {
  return (await request(path, options)).json()
}

/** A JSON body for ``fetch``. */
export function jsonBody(value, method = 'POST') {
  return { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(value) }
}
