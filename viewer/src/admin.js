// The administration page: jobs with live progress (the jobs' event streams), logs, training curves,
// model versions with serve / roll back, and a form that submits a fine-tune. The token stays in this tab.

import { ApiError, errorText, jsonBody, onReachability, request, requestJson } from './api.js'
import { drawCurves, epochsFromLogs } from './plot.js'

const $ = (id) => document.getElementById(id)
const TOKEN_KEY = 'aiaa-admin-token'
const ACTIVE = new Set(['queued', 'running'])

const jobs = new Map() // id -> latest record
const streams = new Map() // id -> AbortController of its event stream
const history = new Map() // id -> {epoch: {loss, dice}} seen on the event stream
let selected = null

const token = () => sessionStorage.getItem(TOKEN_KEY) || ''
const auth = (options = {}) => ({ ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token()}` } })

function showError(err) {
  const box = $('message')
  box.textContent = err instanceof ApiError && err.status ? `The server refused: ${err.message}` : err.message
  box.className = 'message error'
  box.hidden = false
}

function showInfo(text) {
  const box = $('message')
  box.textContent = text
  box.className = 'message info'
  box.hidden = false
}

onReachability((reachable) => { $('unreachable').hidden = reachable })

// ---------------------------------------------------------------- jobs

function fmt(value, digits = 3) {
  return typeof value === 'number' ? value.toFixed(digits) : ''
}

function renderJobs() {
  const body = $('jobs').tBodies[0]
  body.replaceChildren()
  for (const job of [...jobs.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))) {
    const row = body.insertRow()
    row.dataset.jobId = job.id
    row.className = job.id === selected ? 'selected' : ''
    const bar = Object.assign(document.createElement('progress'), { max: 1, value: job.progress || 0 })
    bar.title = `${Math.round((job.progress || 0) * 100)}%`
    const metrics = job.metrics || {}
    const cells = [job.id, job.kind, job.model, job.state, bar,
      job.epoch ? `${job.epoch}/${job.epochs}` : '', fmt(metrics.loss), fmt(metrics.dice),
      job.eta_s != null ? `${Math.round(job.eta_s)} s` : '']
    for (const cell of cells) row.insertCell().append(cell)
    const open = Object.assign(document.createElement('button'), { textContent: 'Details' })
    open.onclick = () => select(job.id)
    row.insertCell().append(open)
  }
}

function remember(job) {
  jobs.set(job.id, job)
  if (job.epoch && job.metrics && (job.metrics.loss != null || job.metrics.dice != null)) {
    const seen = history.get(job.id) || {}
    seen[job.epoch] = { ...(seen[job.epoch] || {}), loss: job.metrics.loss, dice: job.metrics.dice }
    history.set(job.id, seen)
  }
}

async function loadJobs() {
  if (!token()) return
  try {
    for (const job of await requestJson('/admin/jobs?limit=50', auth())) {
      remember(job)
      if (ACTIVE.has(job.state)) follow(job.id)
    }
    renderJobs()
    if (selected) renderDetail()
  } catch (err) {
    showError(err)
  }
}

/** Follow a job's server-sent events (fetch, so that the token travels in a header, never in the URL). */
async function follow(id) {
  if (streams.has(id)) return
  const abort = new AbortController()
  streams.set(id, abort)
  try {
    const response = await fetch(`/admin/jobs/${id}/events`, auth({ signal: abort.signal }))
    if (!response.ok) throw new ApiError(`${response.status}: ${(await errorText(response))[0]}`, response.status)
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
    let buffer = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let cut
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut)
        buffer = buffer.slice(cut + 2)
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n')
        if (!data) continue
        remember(JSON.parse(data))
        renderJobs()
        if (selected === id) renderDetail()
      }
    }
  } catch (err) {
    if (err.name !== 'AbortError') showError(err)
  } finally {
    streams.delete(id)
    const job = jobs.get(id)
    if (job && job.id === selected) refreshLogs()
  }
}

function select(id) {
  selected = id
  $('job-detail').hidden = false
  renderJobs()
  renderDetail()
  refreshLogs()
}

function renderDetail() {
  const job = jobs.get(selected)
  if (!job) return
  $('detail-id').textContent = `${job.id} (${job.kind} ${job.model}, ${job.state})`
  $('result').textContent = JSON.stringify(job.error ? { error: job.error } : job.result, null, 2) || 'no result yet'
  $('cancel-job').disabled = !ACTIVE.has(job.state)
  $('resume-job').disabled = !['interrupted', 'cancelled', 'failed'].includes(job.state)
  drawCurves($('curves'), mergedEpochs(job.id))
}

let logEpochs = {}

function mergedEpochs(id) {
  return { ...(history.get(id) || {}), ...(logEpochs[id] || {}) }
}

async function refreshLogs() {
  if (!selected) return
  const id = selected
  try {
    const text = await (await request(`/admin/jobs/${id}/logs?lines=2000`, auth())).text()
    $('logs').textContent = text || '(no log lines yet)'
    logEpochs[id] = epochsFromLogs(text)
    drawCurves($('curves'), mergedEpochs(id))
  } catch (err) {
    showError(err)
  }
}

// ---------------------------------------------------------------- models and versions

async function loadModels() {
  try {
    const models = await requestJson('/v1/models')
    $('submit-model').replaceChildren(...models.map((m) => Object.assign(document.createElement('option'), { value: m.name, textContent: m.name })))
    if (!token()) return
    const holder = $('versions')
    holder.replaceChildren()
    for (const model of models) {
      let info
      try {
        info = await requestJson(`/admin/models/${encodeURIComponent(model.name)}/versions`, auth())
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404) throw err
        holder.append(Object.assign(document.createElement('p'), { className: 'muted', textContent: `${model.name}: ${err.message}` }))
        continue
      }
      const table = document.createElement('table')
      table.className = 'jobs'
      table.dataset.model = model.name
      table.createCaption().textContent = `${model.name} (serving version ${info.serving ?? '?'})`
      for (const version of info.versions) {
        const row = table.insertRow()
        row.insertCell().textContent = `v${version.version}${version.serving ? ' (serving)' : ''}`
        row.insertCell().textContent = version.source ? (version.source.kind || JSON.stringify(version.source)) : ''
        row.insertCell().textContent = version.metrics ? JSON.stringify(version.metrics).slice(0, 120) : ''
        const serve = Object.assign(document.createElement('button'), {
          textContent: Number(version.version) < Number(info.serving) ? 'Roll back to this' : 'Serve', disabled: Boolean(version.serving),
        })
        serve.onclick = async () => {
          try {
            await requestJson(`/admin/models/${encodeURIComponent(model.name)}/serving`, auth(jsonBody({ version: String(version.version) }, 'PUT')))
            showInfo(`${model.name} now serves version ${version.version}`)
            await loadModels()
          } catch (err) {
            showError(err)
          }
        }
        row.insertCell().append(serve)
      }
      holder.append(table)
    }
  } catch (err) {
    showError(err)
  }
}

// ---------------------------------------------------------------- forms

async function submitJob(event) {
  event.preventDefault()
  let params
  try {
    params = JSON.parse($('params').value || '{}')
  } catch (err) {
    return showError(new Error(`params is not JSON: ${err.message}`))
  }
  const body = { kind: $('kind').value, model: $('submit-model').value, params }
  if ($('datalist').value.trim()) body.datalist = $('datalist').value.trim()
  try {
    const { job_id: id } = await requestJson('/admin/jobs', auth(jsonBody(body)))
    showInfo(`job ${id} queued`)
    await loadJobs()
    follow(id)
    select(id)
  } catch (err) {
    showError(err)
  }
}

function start() {
  for (const abort of streams.values()) abort.abort()
  jobs.clear()
  renderJobs()
  loadJobs()
  loadModels()
}

$('token-form').onsubmit = (event) => {
  event.preventDefault()
  sessionStorage.setItem(TOKEN_KEY, $('token').value)
  $('token').value = ''
  $('message').hidden = true
  start()
}
$('forget').onclick = () => { sessionStorage.removeItem(TOKEN_KEY); location.reload() }
$('submit').onsubmit = submitJob
$('cancel-job').onclick = async () => {
  try { await request(`/admin/jobs/${selected}`, auth({ method: 'DELETE' })); await loadJobs() } catch (err) { showError(err) }
}
$('resume-job').onclick = async () => {
  try { await request(`/admin/jobs/${selected}/resume`, auth({ method: 'POST' })); await loadJobs(); follow(selected) } catch (err) { showError(err) }
}
$('refresh-logs').onclick = refreshLogs
$('message').onclick = () => { $('message').hidden = true }
if (!token()) showInfo('type the admin token (AIAA_ADMIN_TOKEN) above; it is kept in this tab only')
setInterval(loadJobs, 5000) // new jobs from elsewhere; running ones update through their event streams
start()
