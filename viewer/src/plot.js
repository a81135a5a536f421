// Training curves as an SVG plot: loss (left axis) and validation Dice (right axis, 0..1) per epoch.

const NS = 'http://www.w3.org/2000/svg'

/** Per-epoch ``{loss, dice}`` from the JSON lines a training job logs once per epoch. */
export function epochsFromLogs(text) {
  const epochs = {}
  for (const line of text.split('\n')) {
    const start = line.indexOf('{')
    if (start < 0) continue
    try {
      const entry = JSON.parse(line.slice(start))
      if (typeof entry.epoch !== 'number' || typeof entry.loss !== 'number') continue
      epochs[entry.epoch] = { loss: entry.loss, dice: entry.val_mean_dice ?? null }
    } catch {
      // not a metrics line
    }
  }
  return epochs
}

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name)
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v)
  if (text != null) node.textContent = text
  return node
}

/** Draw ``{epoch: {loss, dice}}`` into an <svg>. */
export function drawCurves(svg, epochs) {
  svg.replaceChildren()
  const W = Number(svg.getAttribute('width'))
  const H = Number(svg.getAttribute('height'))
  const pad = { l: 50, r: 50, t: 16, b: 30 }
  const xs = Object.keys(epochs).map(Number).sort((a, b) => a - b)
  if (!xs.length) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no epochs yet'))
    return
  }
  const losses = xs.map((e) => epochs[e].loss).filter((v) => typeof v === 'number')
  const maxLoss = Math.max(...losses, 1e-6)
  const x = (e) => pad.l + (xs.length === 1 ? 0.5 : (e - xs[0]) / (xs[xs.length - 1] - xs[0])) * (W - pad.l - pad.r)
  const yLoss = (v) => pad.t + (1 - v / maxLoss) * (H - pad.t - pad.b)
  const yDice = (v) => pad.t + (1 - v) * (H - pad.t - pad.b)
  svg.append(el('line', { x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b, stroke: '#555' }))
  svg.append(el('text', { x: W / 2, y: H - 8, 'text-anchor': 'middle' }, 'epoch'))
  svg.append(el('text', { x: 4, y: pad.t + 4 }, maxLoss.toPrecision(3)))
  svg.append(el('text', { x: W - pad.r + 4, y: pad.t + 4 }, '1.0'))
  svg.append(el('text', { x: W - pad.r + 4, y: H - pad.b }, '0.0'))
  for (const [key, y, color, label, ly] of [['loss', yLoss, '#f5a623', 'loss', 14], ['dice', yDice, '#4dd0e1', 'val Dice', 28]]) {
    const points = xs.filter((e) => typeof epochs[e][key] === 'number').map((e) => [x(e), y(epochs[e][key])])
    if (!points.length) continue
    svg.append(el('polyline', { points: points.map((p) => p.join(',')).join(' '), fill: 'none', stroke: color, 'stroke-width': 2, class: `curve-${key}` }))
    for (const [px, py] of points) svg.append(el('circle', { cx: px, cy: py, r: 3, fill: color }))
    svg.append(el('text', { x: pad.l + 8, y: pad.t + ly, style: `fill: ${color}` }, label))
  }
  for (const e of xs) svg.append(el('text', { x: x(e), y: H - pad.b + 14, 'text-anchor': 'middle' }, String(e)))
}
