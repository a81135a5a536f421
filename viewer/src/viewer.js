// The viewer: open a volume as a session, prompt the server's models, see, fix and save the masks.
// A client of the public API only: PUT /session/, GET /session/{id}/image, GET /v1/models,
// POST /v1/dextr3d, POST /v1/segmentation and /v1/interactive/{session}/... (prompt, undo, reset, mask).

import { Niivue, NVImage, SHOW_RENDER } from '@niivue/niivue'
import { ApiError, jsonBody, onReachability, request, requestJson } from './api.js'
import { decodeBoxReply, pasteBox, readNiftiLabels } from './masks.js'

const PALETTE = [[230, 60, 60], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
  [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]]
const UNDO_DEPTH = 20
const KINDS = { annotation: 'extreme', segmentation: 'auto', deepgrow: 'interactive', interactive: 'interactive' }

const $ = (id) => document.getElementById(id)

const state = {
  sessionId: null,
  name: '',
  dims: null, // [I, J, K] of the session's volume
  base: null, // the NiiVue image of the volume
  toVoxel: null, // world mm -> voxel index (inverse of the NIfTI affine)
  models: [],
  objects: [],
  active: null,
  tool: 'navigate',
  extreme: [], // extreme points placed so far
  boxCorner: null,
  scribble: null,
  sketch: null, // a lasso or 2D box being drawn on one slice: {tool, axis, slice, voxels, screen}
  bound: null, // the object the server's interactive state holds, and with which model
  timings: [], // one entry per step: {step, route, model, object, timings}
  nextId: 1,
}

const nv = new Niivue({
  backColor: [0.08, 0.08, 0.1, 1], show3Dcrosshair: true, dragAndDropEnabled: false, isColorbar: false,
  multiplanarShowRender: SHOW_RENDER.ALWAYS, loadingText: 'drop a volume here (NIfTI, NRRD, MHA or a DICOM folder)',
  crosshairColor: [1, 0.85, 0, 0.8],
})

// ---------------------------------------------------------------- feedback: spinner, messages, reachability

let busyCount = 0

async function busy(label, work) {
  busyCount++
  $('spinner').hidden = false
  $('spinner-label').textContent = label
  try {
    return await work()
  } catch (err) {
    showError(err)
    return undefined
  } finally {
    busyCount--
    if (busyCount === 0) $('spinner').hidden = true
  }
}

function showError(err) {
  const box = $('message')
  box.textContent = err instanceof ApiError ? `The server refused: ${err.message}` : `Error: ${err.message}`
  if (err instanceof ApiError && err.status === 0) box.textContent = err.message
  box.className = 'message error'
  box.hidden = false
  console.error(err)
}

function showInfo(text) {
  const box = $('message')
  box.textContent = text
  box.className = 'message info'
  box.hidden = false
}

onReachability((reachable) => {
  $('unreachable').hidden = reachable
})

// A heartbeat so that a server that went away shows even while nobody clicks (every 30 s, visible tabs only;
// every 5 s while it is away, so that its return shows soon).
let lastBeat = 0
setInterval(() => {
  const away = !$('unreachable').hidden
  if (document.visibilityState !== 'visible' || Date.now() - lastBeat < (away ? 5000 : 30000)) return
  lastBeat = Date.now()
  request('/health/live', { cache: 'no-store' }).catch(() => {})
}, 1000)

// ---------------------------------------------------------------- geometry

function invertAffine(rows) {
  const [a, b, c] = [rows[0], rows[1], rows[2]]
  const m = [[a[0], a[1], a[2]], [b[0], b[1], b[2]], [c[0], c[1], c[2]]]
  const det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
    m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
  const inv = [
    [(m[1][1] * m[2][2] - m[1][2] * m[2][1]) / det, (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det,
      (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det],
    [(m[1][2] * m[2][0] - m[1][0] * m[2][2]) / det, (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det,
      (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det],
    [(m[1][0] * m[2][1] - m[1][1] * m[2][0]) / det, (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det,
      (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det],
  ]
  const t = [a[3], b[3], c[3]]
  return (mm) => inv.map((r) => Math.round(r[0] * (mm[0] - t[0]) + r[1] * (mm[1] - t[1]) + r[2] * (mm[2] - t[2])))
}

function voxelToMM(v) {
  const A = state.base.hdr.affine
  return [0, 1, 2].map((r) => A[r][0] * v[0] + A[r][1] * v[1] + A[r][2] * v[2] + A[r][3])
}

function inside(v) {
  return v.every((x, d) => x >= 0 && x < state.dims[d])
}

/** The voxel [i, j, k] under a canvas position (CSS pixels), or null outside the 2D views. */
function voxelAt(x, y) {
  const dpr = nv.uiData.dpr || 1
  const frac = nv.canvasPos2frac([x * dpr, y * dpr])
  if (frac[0] < 0) return null
  const v = state.toVoxel(nv.frac2mm(frac))
  return inside(v) ? v : null
}

/** The voxel axis across which the 2D view under a canvas position (CSS pixels) slices, or -1 off the 2D views. */
function sliceAxisAt(x, y) {
  const dpr = nv.uiData.dpr || 1
  const tile = nv.tileIndex(x * dpr, y * dpr)
  const view = tile < 0 ? -1 : nv.screenSlices[tile].axCorSag
  if (view < 0 || view > 2) return -1
  const world = 2 - view // an axial view shows one z, a coronal one y, a sagittal one x
  const A = state.base.hdr.affine
  const along = [0, 1, 2].map((d) => Math.abs(A[world][d]) / Math.hypot(A[0][d], A[1][d], A[2][d]))
  return along.indexOf(Math.max(...along))
}

/** Move the crosshair to a voxel; returns its position (CSS pixels) in the axial view, for scripts and tests. */
function showVoxel(v, sliceType = 0) {
  const frac = nv.mm2frac(voxelToMM(v))
  nv.scene.crosshairPos = frac
  nv.drawScene()
  const hit = nv.frac2canvasPosWithTile(frac, sliceType)
  const dpr = nv.uiData.dpr || 1
  return hit ? [hit.pos[0] / dpr, hit.pos[1] / dpr] : null
}

// ---------------------------------------------------------------- objects and their overlays

function newObject(name, model = null) {
  const color = PALETTE[(state.nextId - 1) % PALETTE.length]
  const image = NVImage.zerosLike(state.base, 'uint8')
  image.hdr.scl_slope = 1
  image.hdr.scl_inter = 0
  image.name = `object${state.nextId}.nii.gz`
  const mask = new Uint8Array(image.img.length)
  const obj = { id: state.nextId++, name, model, color, visible: true, mask, image, undo: [], redo: [], voxels: 0 }
  colour(obj)
  nv.addVolume(image)
  state.objects.push(obj)
  state.active = obj
  applyOpacity()
  renderObjects()
  return obj
}

function colour(obj) {
  const [r, g, b] = obj.color
  obj.image.setColormapLabel({ R: [0, r], G: [0, g], B: [0, b], A: [0, 255], I: [0, 1], labels: ['', obj.name] })
}

function activeObject(name) {
  return state.active || newObject(name || `object ${state.nextId}`)
}

function refresh(obj) {
  let count = 0
  for (let n = 0; n < obj.mask.length; n++) count += obj.mask[n]
  obj.voxels = count
  show(obj)
  nv.updateGLVolume()
  renderObjects()
}

/** What the overlay shows: the mask, or in outline mode its border voxels (those with a face outside it). */
function show(obj) {
  if (!$('outline').checked) {
    obj.image.img.set(obj.mask)
    return
  }
  const [nx, ny, nz] = state.dims
  const m = obj.mask
  const out = obj.image.img
  const sx = 1
  const sy = nx
  const sz = nx * ny
  for (let k = 0, v = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++, v++) {
        out[v] = m[v] && (i === 0 || i === nx - 1 || j === 0 || j === ny - 1 || k === 0 || k === nz - 1 ||
          !m[v - sx] || !m[v + sx] || !m[v - sy] || !m[v + sy] || !m[v - sz] || !m[v + sz]) ? 1 : 0
      }
    }
  }
}

function applyOpacity() {
  const opacity = Number($('opacity').value) / 100
  for (const obj of state.objects) {
    obj.image.opacity = obj.visible ? opacity : 0
    show(obj)
  }
  nv.updateGLVolume()
}

function removeObject(obj) {
  nv.removeVolume(obj.image)
  state.objects = state.objects.filter((o) => o !== obj)
  if (state.active === obj) state.active = state.objects[state.objects.length - 1] || null
  if (state.bound && state.bound.object === obj) state.bound = null
  renderObjects()
}

function renderObjects() {
  const list = $('objects')
  list.replaceChildren()
  for (const obj of state.objects) {
    const row = document.createElement('li')
    row.className = obj === state.active ? 'active' : ''
    row.dataset.objectId = obj.id
    const pick = document.createElement('input')
    pick.type = 'color'
    pick.title = 'colour'
    pick.value = '#' + obj.color.map((c) => c.toString(16).padStart(2, '0')).join('')
    pick.oninput = () => {
      obj.color = [1, 3, 5].map((i) => parseInt(pick.value.slice(i, i + 2), 16))
      colour(obj)
      nv.updateGLVolume()
    }
    const name = document.createElement('input')
    name.value = obj.name
    name.title = 'label name'
    name.setAttribute('list', 'label-names')
    name.onchange = () => { obj.name = name.value; colour(obj) }
    const shown = document.createElement('input')
    shown.type = 'checkbox'
    shown.checked = obj.visible
    shown.title = 'visible'
    shown.onchange = () => { obj.visible = shown.checked; applyOpacity() }
    const count = document.createElement('span')
    count.className = 'count'
    count.textContent = `${obj.voxels} vox`
    const drop = document.createElement('button')
    drop.textContent = '×'
    drop.title = 'delete this object'
    drop.onclick = (e) => { e.stopPropagation(); removeObject(obj) }
    row.append(pick, name, shown, count, drop)
    row.onclick = (e) => {
      if (e.target === row || e.target === count) { state.active = obj; renderObjects() }
    }
    list.append(row)
  }
  const labels = new Set(state.models.flatMap((m) => m.labels || []))
  $('label-names').replaceChildren(...[...labels].map((l) => Object.assign(document.createElement('option'), { value: l })))
  updateButtons()
}

// ---------------------------------------------------------------- steps, undo and redo

function record(route, model, obj, timings) {
  state.timings.push({ step: state.timings.length + 1, route, model, object: obj ? obj.name : null, timings })
  const ms = Object.entries(timings || {}).map(([k, v]) => `${k} ${Math.round(v)} ms`).join(', ')
  $('timings').textContent = `${route} (${model}): ${ms || 'no timings'}`
}

/** Replace an object's mask as one undoable step (extreme points, automatic results, local edits). */
function localStep(obj, mask, entry = {}) {
  obj.undo.push({ previous: obj.mask.slice(), ...entry })
  if (obj.undo.length > UNDO_DEPTH) obj.undo.shift()
  obj.redo = []
  obj.mask.set(mask)
  if (state.bound && state.bound.object === obj) state.bound = null // the server's copy is stale now
  refresh(obj)
}

async function undo() {
  const obj = state.active
  if (!obj || obj.undo.length === 0) return showInfo('nothing to undo')
  const entry = obj.undo[obj.undo.length - 1]
  await busy('undo', async () => {
    const now = obj.mask.slice()
    if (entry.prompt && state.bound && state.bound.object === obj) {
      const reply = await requestJson(`/v1/interactive/${state.sessionId}/undo`, { method: 'POST' })
      await applyServerMask(obj, reply)
    } else {
      obj.mask.set(entry.previous)
      if (state.bound && state.bound.object === obj) state.bound = null
    }
    obj.undo.pop()
    obj.redo.push({ ...entry, next: now })
    refresh(obj)
  })
}

async function redo() {
  const obj = state.active
  if (!obj || obj.redo.length === 0) return showInfo('nothing to redo')
  const entry = obj.redo.pop()
  if (entry.prompt) return interactive(entry.prompt, entry.model, obj.redo) // the server replays the prompt
  obj.undo.push({ ...entry, previous: obj.mask.slice() })
  obj.mask.set(entry.next)
  refresh(obj)
}

async function reset() {
  const obj = state.active
  if (!obj) return
  await busy('reset', async () => {
    if (state.bound && state.bound.object === obj) {
      await request(`/v1/interactive/${state.sessionId}/reset`, { method: 'POST' })
      state.bound = null
    }
    localStep(obj, new Uint8Array(obj.mask.length))
  })
  clearPending()
}

// ---------------------------------------------------------------- the server's models

function modelsOf(kind) {
  return state.models.filter((m) => KINDS[m.type] === kind)
}

async function loadModels() {
  await busy('loading models', async () => {
    state.models = await requestJson('/v1/models')
    for (const [kind, id] of [['extreme', 'model-extreme'], ['auto', 'model-auto'], ['interactive', 'model-interactive']]) {
      const select = $(id)
      const models = modelsOf(kind)
      select.replaceChildren(...models.map((m) => Object.assign(document.createElement('option'), {
        value: m.name, textContent: `${m.name} (${(m.labels || []).join(', ')})`, title: m.description || '',
      })))
      select.disabled = models.length === 0
      if (models.length === 0) select.append(Object.assign(document.createElement('option'), { textContent: 'none served' }))
    }
    renderObjects()
  })
}

function chosen(kind) {
  const select = $(`model-${kind}`)
  return select.disabled ? null : state.models.find((m) => m.name === select.value) || null
}

// ---------------------------------------------------------------- opening a volume

async function openSession(sessionId) {
  await busy('loading the volume', async () => {
    const info = await requestJson(`/session/${encodeURIComponent(sessionId)}`)
    const buffer = await (await request(`/session/${encodeURIComponent(sessionId)}/image`)).arrayBuffer()
    for (const obj of [...state.objects]) removeObject(obj)
    for (const vol of [...nv.volumes]) nv.removeVolume(vol)
    await nv.loadFromArrayBuffer(buffer, 'volume.nii.gz')
    state.base = nv.volumes[0]
    state.sessionId = sessionId
    state.name = info.session_info.name
    state.dims = [1, 2, 3].map((d) => state.base.hdr.dims[d])
    state.toVoxel = invertAffine(state.base.hdr.affine)
    state.bound = null
    state.timings = []
    state.nextId = 1
    clearPending()
    $('volume-name').textContent = `${state.name} ${state.dims.join('×')}`
    $('window-min').value = Math.round(state.base.cal_min)
    $('window-max').value = Math.round(state.base.cal_max)
    const url = new URL(location.href)
    url.searchParams.set('session', sessionId)
    history.replaceState(null, '', url)
    $('message').hidden = true
    updateButtons()
  })
}

async function upload(files) {
  if (!files.length) return
  const form = new FormData()
  if (files.length === 1) {
    form.append('image', files[0], files[0].name)
  } else {
    files.forEach((file, n) => form.append(`image${n}`, file, file.name)) // a DICOM series, one part per file
  }
  const created = await busy('uploading', () => requestJson('/session/', { method: 'PUT', body: form }))
  if (created) await openSession(created.session_id)
}

async function filesOf(entry) {
  if (entry.isFile) return [await new Promise((resolve, reject) => entry.file(resolve, reject))]
  const reader = entry.createReader()
  const out = []
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject))
    if (batch.length === 0) return out
    for (const child of batch) out.push(...(await filesOf(child)))
  }
}

async function dropped(event) {
  event.preventDefault()
  $('viewport').classList.remove('dragging')
  const entries = [...event.dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean)
  const files = entries.length ? (await Promise.all(entries.map(filesOf))).flat() : [...event.dataTransfer.files]
  await upload(files.filter((f) => !f.name.startsWith('.')))
}

// ---------------------------------------------------------------- prompts

function clearPending() {
  state.extreme = []
  state.boxCorner = null
  state.scribble = null
  state.sketch = null
  drawSketch()
  updateButtons()
}

function needVolume() {
  if (!state.sessionId) { showInfo('open a volume first: drop a file here or use Open'); return false }
  return true
}

async function runExtreme() {
  const model = chosen('extreme')
  if (!needVolume()) return
  if (!model) return showInfo('the server serves no extreme-point model')
  if (state.extreme.length < 6) return showInfo(`place at least 6 extreme points (${state.extreme.length} so far)`)
  const points = state.extreme.slice()
  await busy(`${model.name}: extreme points`, async () => {
    const params = { points, result_extension: '.nii', result_compress: false, result_dtype: 'uint8' }
    const form = new FormData()
    form.append('params', JSON.stringify(params))
    const url = `/v1/dextr3d?model=${encodeURIComponent(model.name)}&session_id=${state.sessionId}`
    const reply = await (await request(url, { method: 'POST', body: form })).formData()
    const meta = JSON.parse(await textOf(reply.get('params')))
    const { labels } = await readNiftiLabels(await reply.get('image').arrayBuffer())
    const obj = state.active && state.active.voxels === 0 ? state.active : newObject((model.labels || [])[0] || 'object', model.name)
    localStep(obj, labels.map((v) => (v > 0 ? 1 : 0)), { route: 'dextr3d' })
    record('dextr3d', model.name, obj, meta.timings)
    state.extreme = []
  })
  updateButtons()
}

async function textOf(part) {
  return typeof part === 'string' ? part : part.text()
}

async function runAutomatic() {
  const model = chosen('auto')
  if (!needVolume()) return
  if (!model) return showInfo('the server serves no automatic segmentation model')
  await busy(`${model.name}: automatic segmentation`, async () => {
    const form = new FormData()
    form.append('params', JSON.stringify({ result_extension: '.nii', result_compress: false, result_dtype: 'uint8' }))
    const url = `/v1/segmentation?model=${encodeURIComponent(model.name)}&session_id=${state.sessionId}`
    const reply = await (await request(url, { method: 'POST', body: form })).formData()
    const meta = JSON.parse(await textOf(reply.get('params')))
    const { labels } = await readNiftiLabels(await reply.get('image').arrayBuffer())
    const names = model.labels || []
    let made = 0
    for (let value = 1; value <= Math.max(names.length, 1); value++) {
      const mask = labels.map((v) => (v === value ? 1 : 0))
      if (!mask.some((v) => v)) continue
      localStep(newObject(names[value - 1] || `label ${value}`, model.name), mask, { route: 'segmentation' })
      made++
    }
    record('segmentation', model.name, state.active, meta.timings)
    if (made === 0) showInfo(`${model.name} found nothing in this volume`)
  })
}

/** Bring the server's interactive state to this object: its mask as the starting mask, or a fresh start. */
async function bind(obj, model) {
  if (state.bound && state.bound.object === obj && state.bound.model === model) return
  if (obj.voxels > 0) {
    const form = new FormData()
    const file = await maskFile([obj])
    form.append('mask', new Blob([file]), 'mask.nii.gz')
    await request(`/v1/interactive/${state.sessionId}/mask?model=${encodeURIComponent(model)}`, { method: 'PUT', body: form })
  } else if (state.bound) {
    await request(`/v1/interactive/${state.sessionId}/reset`, { method: 'POST' })
  }
  state.bound = { object: obj, model }
}

async function applyServerMask(obj, reply) {
  if (reply && reply.mask) {
    pasteBox(obj.mask, state.dims, await decodeBoxReply(reply))
    return
  }
  // a reply without a mask: ask for the whole current mask
  const full = await requestJson(`/v1/interactive/${state.sessionId}/mask?format=json`)
  pasteBox(obj.mask, state.dims, await decodeBoxReply(full))
}

/** One interactive prompt on the active object; ``keepRedo`` is the redo stack to keep (a redo), if any. */
async function interactive(prompt, modelName = null, keepRedo = null) {
  const model = modelName ? { name: modelName } : chosen('interactive')
  if (!needVolume()) return
  if (!model) return showInfo('the server serves no interactive model: use extreme points or automatic segmentation')
  const obj = activeObject(((chosen('interactive') || {}).labels || [])[0])
  await busy(`${model.name}: ${prompt.type}`, async () => {
    await bind(obj, model.name)
    const url = `/v1/interactive/${state.sessionId}/prompt?model=${encodeURIComponent(model.name)}`
    const previous = obj.mask.slice()
    const reply = await requestJson(url, jsonBody(prompt))
    await applyServerMask(obj, reply)
    obj.undo.push({ previous, prompt, model: model.name })
    if (obj.undo.length > UNDO_DEPTH) obj.undo.shift()
    obj.redo = keepRedo || []
    refresh(obj)
    record('interactive', model.name, obj, reply.timings)
  })
}

function onClick(v, shift) {
  const tool = state.tool
  if (tool === 'extreme') {
    state.extreme.push(v)
    updateButtons()
    if (state.extreme.length === 6 && $('auto-run').checked) runExtreme()
  } else if (tool === 'positive' || tool === 'negative') {
    interactive({ type: 'point', positive: (tool === 'positive') !== shift, points: [v] })
  } else if (tool === 'box') {
    if (!state.boxCorner) {
      state.boxCorner = v
      updateButtons()
    } else {
      const [a, b] = [state.boxCorner, v]
      state.boxCorner = null
      interactive({ type: 'box', positive: true, box: [a.map((x, d) => Math.min(x, b[d])), a.map((x, d) => Math.max(x, b[d]))] })
    }
  }
}

// ---------------------------------------------------------------- lasso and 2D box: drawn on one slice

function startSketch(x, y) {
  const v = voxelAt(x, y)
  const axis = sliceAxisAt(x, y)
  state.sketch = v && axis >= 0 ? { tool: state.tool, axis, slice: v[axis], voxels: [v], screen: [[x, y]] } : null
  drawSketch()
}

function extendSketch(x, y) {
  const sketch = state.sketch
  const v = voxelAt(x, y)
  if (!v) return
  v[sketch.axis] = sketch.slice // the drag stays on the slice it started on
  const last = sketch.voxels[sketch.voxels.length - 1]
  if (sketch.tool === 'box2d') sketch.voxels = [sketch.voxels[0], v]
  else if (v.some((c, d) => c !== last[d])) sketch.voxels.push(v)
  sketch.screen = sketch.tool === 'box2d' ? [sketch.screen[0], [x, y]] : [...sketch.screen, [x, y]]
  drawSketch()
}

/** Send the finished lasso or 2D box as the interactive API's prompt (``shift``: negative). */
function finishSketch(shift) {
  const sketch = state.sketch
  state.sketch = null
  drawSketch()
  if (!sketch) return
  if (sketch.tool === 'lasso') {
    if (sketch.voxels.length < 3) return showInfo('lasso: draw a closed contour around the object on one slice')
    interactive({ type: 'lasso', positive: !shift, points: sketch.voxels })
  } else {
    const [a, b] = [sketch.voxels[0], sketch.voxels[sketch.voxels.length - 1]]
    if (a.every((x, d) => x === b[d])) return showInfo('2D box: drag a rectangle over the object on one slice')
    interactive({ type: 'box', positive: !shift, box: [a.map((x, d) => Math.min(x, b[d])), a.map((x, d) => Math.max(x, b[d]))] })
  }
}

/** The contour or rectangle being drawn, over the canvas. */
function drawSketch() {
  const svg = $('sketch')
  svg.replaceChildren()
  const sketch = state.sketch
  if (!sketch) return
  const ns = 'http://www.w3.org/2000/svg'
  if (sketch.tool === 'lasso') {
    const line = document.createElementNS(ns, 'polyline')
    line.setAttribute('points', [...sketch.screen, sketch.screen[0]].map((p) => p.join(',')).join(' '))
    svg.append(line)
  } else {
    const [[x0, y0], [x1, y1]] = [sketch.screen[0], sketch.screen[sketch.screen.length - 1]]
    const rect = document.createElementNS(ns, 'rect')
    const box = { x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0), height: Math.abs(y1 - y0) }
    for (const [key, value] of Object.entries(box)) rect.setAttribute(key, String(value))
    svg.append(rect)
  }
}

const SKETCHES = ['lasso', 'box2d']

function installPointer(canvas) {
  let down = null
  canvas.addEventListener('pointerdown', (e) => {
    if (e.button !== 0 || !state.sessionId) return
    down = { x: e.offsetX, y: e.offsetY }
    if (state.tool === 'scribble') {
      const v = voxelAt(e.offsetX, e.offsetY)
      state.scribble = v ? new Map([[v.join(','), v]]) : new Map()
    }
    if (SKETCHES.includes(state.tool)) startSketch(e.offsetX, e.offsetY)
  })
  canvas.addEventListener('pointermove', (e) => {
    if (state.sketch && e.buttons & 1) return extendSketch(e.offsetX, e.offsetY)
    if (state.tool !== 'scribble' || !state.scribble || !(e.buttons & 1)) return
    const v = voxelAt(e.offsetX, e.offsetY)
    if (!v) return
    const last = [...state.scribble.values()].pop() || v
    // a continuous stroke: every voxel on the line from the last one, however fast the pointer moved
    const steps = Math.max(1, ...v.map((x, d) => Math.abs(x - last[d])))
    for (let s = 1; s <= steps; s++) {
      const p = last.map((x, d) => Math.round(x + ((v[d] - x) * s) / steps))
      state.scribble.set(p.join(','), p)
    }
  })
  canvas.addEventListener('pointerup', (e) => {
    if (e.button !== 0 || !down) return
    const moved = Math.hypot(e.offsetX - down.x, e.offsetY - down.y)
    down = null
    if (SKETCHES.includes(state.tool)) return finishSketch(e.shiftKey)
    if (state.tool === 'scribble' && state.scribble) {
      const points = [...state.scribble.values()]
      state.scribble = null
      if (points.length) interactive({ type: 'scribble', positive: !e.shiftKey, points })
      return
    }
    if (moved > 4 || state.tool === 'navigate') return
    const v = voxelAt(e.offsetX, e.offsetY)
    if (v) onClick(v, e.shiftKey)
  })
}

// ---------------------------------------------------------------- saving

function download(name, blob) {
  const link = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: name })
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(link.href), 1000)
}

/** Objects as one gzipped NIfTI label map on the volume's grid (object n -> label n, later objects on top). */
async function maskFile(objects) {
  const image = NVImage.zerosLike(state.base, 'uint8')
  image.hdr.scl_slope = 1
  image.hdr.scl_inter = 0
  objects.forEach((obj, n) => {
    for (let v = 0; v < obj.mask.length; v++) if (obj.mask[v]) image.img[v] = n + 1
  })
  return image.saveToUint8Array('mask.nii.gz')
}

const labelMapBytes = () => maskFile(state.objects)

async function saveMask() {
  if (!state.objects.length) return showInfo('nothing to save yet')
  const stem = (state.name || 'volume').split('.')[0]
  download(`${stem}_mask.nii.gz`, new Blob([await labelMapBytes()], { type: 'application/gzip' }))
  const labels = state.objects.map((obj, n) => ({ value: n + 1, name: obj.name, color: obj.color, voxels: obj.voxels, model: obj.model }))
  download(`${stem}_labels.json`, new Blob([JSON.stringify(labels, null, 2)], { type: 'application/json' }))
}

function saveTimings() {
  download('timings.json', new Blob([JSON.stringify(state.timings, null, 2)], { type: 'application/json' }))
}

// ---------------------------------------------------------------- controls

function setTool(tool) {
  state.tool = tool
  for (const button of document.querySelectorAll('[data-tool]')) button.setAttribute('aria-pressed', String(button.dataset.tool === tool))
  clearPending()
}

function updateButtons() {
  const open = Boolean(state.sessionId)
  $('extreme-count').textContent = state.extreme.length ? `${state.extreme.length} point(s) placed` : ''
  $('box-note').textContent = state.boxCorner ? 'box: click the opposite corner' : ''
  $('run-extreme').disabled = !open || state.extreme.length < 6
  $('run-auto').disabled = !open || !chosen('auto')
  for (const id of ['undo', 'redo', 'reset', 'save-mask', 'new-object']) $(id).disabled = !open
}

function setLayout(value) {
  const layouts = {
    multi: [nv.sliceTypeMultiplanar, SHOW_RENDER.ALWAYS], axial: [nv.sliceTypeAxial], coronal: [nv.sliceTypeCoronal],
    sagittal: [nv.sliceTypeSagittal], render: [nv.sliceTypeRender],
  }
  const [type, render] = layouts[value]
  if (render !== undefined) nv.opts.multiplanarShowRender = render
  nv.setSliceType(type)
  $('layout').value = value
}

function setWindow() {
  if (!state.base) return
  state.base.cal_min = Number($('window-min').value)
  state.base.cal_max = Number($('window-max').value)
  nv.updateGLVolume()
}

function zoom(factor) {
  const pan = nv.scene.pan2Dxyzmm
  nv.setPan2Dxyzmm([pan[0], pan[1], pan[2], Math.min(8, Math.max(0.5, pan[3] * factor))])
}

const SHORTCUTS = [
  ['n', 'navigate (click moves the crosshair)', () => setTool('navigate')],
  ['e', 'extreme points tool', () => setTool('extreme')],
  ['p', 'positive click tool', () => setTool('positive')],
  ['x', 'negative click tool', () => setTool('negative')],
  ['b', '3D box tool (click two opposite corners, on any slices)', () => setTool('box')],
  ['d', '2D box tool (drag a rectangle on a slice; shift: negative)', () => setTool('box2d')],
  ['c', 'lasso tool (draw a closed contour on a slice; shift: negative)', () => setTool('lasso')],
  ['s', 'scribble tool (drag; shift: negative)', () => setTool('scribble')],
  ['Enter', 'run the extreme points model', () => runExtreme()],
  ['a', 'automatic segmentation', () => runAutomatic()],
  ['Ctrl+z', 'undo', () => undo()],
  ['Ctrl+y', 'redo', () => redo()],
  ['r', 'reset the object', () => reset()],
  ['o', 'new object', () => needVolume() && newObject(`object ${state.nextId}`)],
  ['Ctrl+s', 'save the mask (NIfTI) and its labels', () => saveMask()],
  ['t', 'save the per-step timings (JSON)', () => saveTimings()],
  ['l', 'next layout (three views and 3D, axial, coronal, sagittal, 3D)', () => {
    const order = ['multi', 'axial', 'coronal', 'sagittal', 'render']
    setLayout(order[(order.indexOf($('layout').value) + 1) % order.length])
  }],
  ['f', 'outline or fill', () => { $('outline').checked = !$('outline').checked; applyOpacity() }],
  ['+', 'zoom in', () => zoom(1.25)],
  ['-', 'zoom out', () => zoom(0.8)],
  ['?', 'this help', () => toggleHelp()],
  ['Escape', 'drop the points not yet sent; close help', () => { clearPending(); $('help').hidden = true }],
]

function toggleHelp() {
  $('help').hidden = !$('help').hidden
}

function keyName(e) {
  if (e.key === 'Enter' || e.key === 'Escape') return e.key
  return (e.ctrlKey || e.metaKey ? 'Ctrl+' : '') + e.key.toLowerCase()
}

function installControls() {
  const table = $('shortcuts')
  for (const [key, what] of SHORTCUTS) {
    const row = table.insertRow()
    row.insertCell().append(Object.assign(document.createElement('kbd'), { textContent: key }))
    row.insertCell().textContent = what
  }
  document.addEventListener('keydown', (e) => {
    const typing = e.target instanceof HTMLInputElement && e.target.type !== 'checkbox' && e.target.type !== 'range'
    if (typing || e.target instanceof HTMLSelectElement || e.target instanceof HTMLTextAreaElement) return
    const found = SHORTCUTS.find(([key]) => key.toLowerCase() === keyName(e).toLowerCase())
    if (!found) return
    e.preventDefault()
    found[2]()
  })
  for (const button of document.querySelectorAll('[data-tool]')) button.onclick = () => setTool(button.dataset.tool)
  $('run-extreme').onclick = runExtreme
  $('run-auto').onclick = runAutomatic
  $('undo').onclick = undo
  $('redo').onclick = redo
  $('reset').onclick = reset
  $('new-object').onclick = () => needVolume() && newObject(`object ${state.nextId}`)
  $('save-mask').onclick = saveMask
  $('save-timings').onclick = saveTimings
  $('opacity').oninput = applyOpacity
  $('outline').onchange = applyOpacity
  $('layout').onchange = () => setLayout($('layout').value)
  $('window-min').onchange = setWindow
  $('window-max').onchange = setWindow
  $('zoom-in').onclick = () => zoom(1.25)
  $('zoom-out').onclick = () => zoom(0.8)
  $('help-button').onclick = toggleHelp
  $('help-close').onclick = toggleHelp
  $('message').onclick = () => { $('message').hidden = true }
  $('file').onchange = () => upload([...$('file').files])
  $('folder').onchange = () => upload([...$('folder').files])
  for (const id of ['model-extreme', 'model-auto', 'model-interactive']) $(id).onchange = updateButtons
  const viewport = $('viewport')
  viewport.addEventListener('dragover', (e) => { e.preventDefault(); viewport.classList.add('dragging') })
  viewport.addEventListener('dragleave', () => viewport.classList.remove('dragging'))
  viewport.addEventListener('drop', dropped)
}

async function main() {
  installControls()
  if (!document.createElement('canvas').getContext('webgl2')) {
    showError(new Error('this browser offers no WebGL2, which the viewer needs: enable hardware acceleration ' +
      '(or WebGL) in its settings, or use a current Chromium or Firefox'))
    return
  }
  await nv.attachToCanvas($('gl'))
  installPointer($('gl'))
  setLayout('multi')
  setTool('navigate')
  await loadModels()
  const session = new URLSearchParams(location.search).get('session')
  if (session) await openSession(session)
  updateButtons()
}

// What scripts and the tests use: the state, and voxel <-> screen positions.
window.aiaa = { state, nv, showVoxel, voxelAt, openSession, labelMapBytes }

main().catch(showError)
