// One command rebuilds the served assets: `npm ci && npm run build` (or `make viewer` from the repository root).
// Bundles src/ with esbuild into ../server/static/, copies the API documentation pages' prebuilt Swagger UI and
// ReDoc bundles into ../server/static/docs/ (so /docs and /redoc work offline), and writes the licences of both.
import { build } from 'esbuild'
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'server', 'static')
rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })

const result = await build({
  entryPoints: [join(here, 'src', 'viewer.js'), join(here, 'src', 'admin.js')],
  outdir: out,
  bundle: true,
  format: 'esm',
  minify: true,
  legalComments: 'none', // collected into LICENSES.txt instead
  target: ['chrome110', 'firefox110', 'safari16'],
  metafile: true,
  logLevel: 'warning',
})

for (const page of ['index.html', 'admin.html', 'style.css']) copyFileSync(join(here, 'src', page), join(out, page))

// The licence of each package whose code is in the bundles.
const packages = new Map()
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//)
  if (match) packages.set(match[1], join(here, 'node_modules', match[1]))
}
const notices = ['Third-party software bundled in viewer.js and admin.js (built from viewer/ by `make viewer`).', '']
for (const [name, folder] of [...packages].sort()) {
  const meta = JSON.parse(readFileSync(join(folder, 'package.json'), 'utf8'))
  const licenceFile = readdirSync(folder).find((f) => /^(licen[sc]e|copying)/i.test(f))
  notices.push('='.repeat(78), `${name} ${meta.version} (${meta.license || 'see below'})`, meta.homepage || '', '')
  notices.push(licenceFile ? readFileSync(join(folder, licenceFile), 'utf8').trim() : `licence: ${meta.license} (no licence file in the package)`, '')
}

// The API documentation pages (/docs, /redoc) load these prebuilt bundles as they are published.
const DOCS_ASSETS = {
  'swagger-ui-dist': ['swagger-ui-bundle.js', 'swagger-ui.css', 'favicon-32x32.png'],
  redoc: ['bundles/redoc.standalone.js'],
}
mkdirSync(join(out, 'docs'))
notices.push('', 'Copied unchanged into docs/ for the API documentation pages (/docs and /redoc).', '')
for (const [name, files] of Object.entries(DOCS_ASSETS)) {
  const folder = join(here, 'node_modules', name)
  const meta = JSON.parse(readFileSync(join(folder, 'package.json'), 'utf8'))
  notices.push('='.repeat(78), `${name} ${meta.version} (${meta.license})`, meta.homepage || '', '')
  for (const file of files) {
    copyFileSync(join(folder, file), join(out, 'docs', basename(file)))
    // the notices of the third-party code inside a prebuilt bundle
    if (existsSync(join(folder, `${file}.LICENSE.txt`))) notices.push(readFileSync(join(folder, `${file}.LICENSE.txt`), 'utf8').trim(), '')
  }
  for (const extra of ['LICENSE', 'NOTICE']) {
    if (existsSync(join(folder, extra))) notices.push(readFileSync(join(folder, extra), 'utf8').trim(), '')
  }
}
writeFileSync(join(out, 'LICENSES.txt'), notices.join('\n') + '\n')
if (!existsSync(join(out, 'viewer.js'))) throw new Error('the build wrote no viewer.js')
console.log(`built ${[...packages].length} bundled packages into ${out}`)
