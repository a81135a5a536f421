// Mask encodings: the interactive API's gzip+base64 boxes (i fastest) and NIfTI label files.

/** Bytes through the browser's own gzip (DecompressionStream / CompressionStream). */
async function pipe(bytes, stream) {
  const out = await new Response(new Blob([bytes]).stream().pipeThrough(stream)).arrayBuffer()
  return new Uint8Array(out)
}

export const gunzip = (bytes) => pipe(bytes, new DecompressionStream('gzip'))
export const gzip = (bytes) => pipe(bytes, new CompressionStream('gzip'))

export function base64ToBytes(text) {
  const raw = atob(text)
  const out = new Uint8Array(raw.length)
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i)
  return out
}

export function bytesToBase64(bytes) {
  let raw = ''
  const chunk = 0x8000
  for (let i = 0; i < bytes.length; i += chunk) raw += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk))
  return btoa(raw)
}

/** Decode a reply ``{"box": [lo, hi), "shape", "encoding", "mask"}``: the box's 0/1 bytes, i fastest. */
export async function decodeBoxReply(reply) {
  if (reply.encoding !== 'gzip-base64-u8-fortran') throw new Error(`unknown mask encoding ${reply.encoding}`)
  const bytes = await gunzip(base64ToBytes(reply.mask))
  const [lo, hi] = reply.box || [[0, 0, 0], reply.shape]
  const size = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]]
  if (bytes.length !== size[0] * size[1] * size[2]) {
    throw new Error(`mask of ${bytes.length} bytes does not fill the box ${JSON.stringify(reply.box)}`)
  }
  return { lo, size, bytes }
}

/** Write a box of 0/1 values into a full mask (both i fastest). */
export function pasteBox(mask, dims, { lo, size, bytes }) {
  const [nx, ny] = dims
  let src = 0
  for (let k = 0; k < size[2]; k++) {
    for (let j = 0; j < size[1]; j++) {
      const row = lo[0] + (lo[1] + j) * nx + (lo[2] + k) * nx * ny
      for (let i = 0; i < size[0]; i++) mask[row + i] = bytes[src++] ? 1 : 0
    }
  }
}

/** The full mask in the API's JSON form (for ``PUT /v1/interactive/{id}/mask``). */
export async function encodeFullMask(mask, dims) {
  return { shape: dims, encoding: 'gzip-base64-u8-fortran', mask: bytesToBase64(await gzip(mask)) }
}

const READERS = {
  2: (v, o) => v.getUint8(o), 4: (v, o) => v.getInt16(o, true), 8: (v, o) => v.getInt32(o, true),
  16: (v, o) => v.getFloat32(o, true), 64: (v, o) => v.getFloat64(o, true), 256: (v, o) => v.getInt8(o),
  512: (v, o) => v.getUint16(o, true), 768: (v, o) => v.getUint32(o, true),
}
const SIZES = { 2: 1, 4: 2, 8: 4, 16: 4, 64: 8, 256: 1, 512: 2, 768: 4 }

/** A little-endian NIfTI-1 label file (gzipped or not) -> ``{dims, labels}``, labels as integers, i fastest. */
export async function readNiftiLabels(buffer) {
  let bytes = new Uint8Array(buffer)
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = await gunzip(bytes)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (view.getInt32(0, true) !== 348) throw new Error('the mask is not a little-endian NIfTI-1 file')
  const dims = [view.getInt16(42, true), view.getInt16(44, true), view.getInt16(46, true)]
  const code = view.getInt16(70, true)
  const offset = Math.round(view.getFloat32(108, true))
  const read = READERS[code]
  if (!read) throw new Error(`NIfTI data type ${code} is not a label type`)
  const count = dims[0] * dims[1] * dims[2]
  const labels = new Uint8Array(count)
  for (let n = 0; n < count; n++) labels[n] = Math.round(read(view, offset + n * SIZES[code]))
  return { dims, labels }
}
