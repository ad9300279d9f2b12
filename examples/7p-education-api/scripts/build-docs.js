#!/usr/bin/env node
'use strict';
// `npm run build:docs`: renders api-spec/openapi.json into docs/ (openapi.json + a static
// index.html). Plain Node, no dependencies, runs in well under a second.

const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const specFile = path.join(root, 'api-spec', 'openapi.json');
const outDir = path.join(root, 'docs');
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

const escapeHtml = (value) =>
  String(value).replace(
    /[&<>"']/g,
    (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch],
  );

function resolveRef(spec, node) {
  if (!node || typeof node.$ref !== 'string') return node;
  const parts = node.$ref.replace(/^#\//, '').split('/');
  const target = parts.reduce((acc, key) => (acc ? acc[key] : undefined), spec);
  if (!target) throw new Error(`unresolved $ref ${node.$ref}`);
  return target;
}

function schemaLabel(schema) {
  if (!schema) return '';
  if (schema.$ref) return schema.$ref.split('/').pop();
  if (schema.type === 'array') return `${schemaLabel(schema.items)}[]`;
  return schema.type || 'object';
}

function renderSchema(name, schema) {
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties || {})
    .map(([prop, def]) => {
      const notes = [];
      if (def.minimum !== undefined) notes.push(`min ${def.minimum}`);
      if (def.maximum !== undefined) notes.push(`max ${def.maximum}`);
      if (def.minLength !== undefined) notes.push(`minLength ${def.minLength}`);
      if (def.maxLength !== undefined) notes.push(`maxLength ${def.maxLength}`);
      if (def.enum) notes.push(`one of ${def.enum.join(', ')}`);
      if (def.default !== undefined) notes.push(`default ${def.default}`);
      if (def.format) notes.push(def.format);
      return `<tr><td><code>${escapeHtml(prop)}</code>${required.has(prop) ? ' *' : ''}</td><td>${escapeHtml(
        schemaLabel(def),
      )}</td><td>${escapeHtml(notes.join('; '))}</td></tr>`;
    })
    .join('\n');
  return `<section id="schema-${escapeHtml(name)}"><h3>${escapeHtml(name)}</h3>
<table><tr><th>field</th><th>type</th><th>constraints</th></tr>
${rows}
</table></section>`;
}

function renderOperation(spec, route, method, op) {
  const params = (op.parameters || []).map((p) => resolveRef(spec, p));
  const paramRows = params
    .map(
      (p) =>
        `<li><code>${escapeHtml(p.name)}</code> (${escapeHtml(p.in)}${p.required ? ', required' : ''}): ${escapeHtml(
          schemaLabel(p.schema),
        )}</li>`,
    )
    .join('');
  const body = op.requestBody && op.requestBody.content['application/json'];
  const responses = Object.entries(op.responses)
    .map(([status, response]) => {
      const resolved = resolveRef(spec, response);
      const json = resolved.content && resolved.content['application/json'];
      const schema = json ? ` — <code>${escapeHtml(schemaLabel(json.schema))}</code>` : '';
      return `<li><b>${escapeHtml(status)}</b> ${escapeHtml(resolved.description)}${schema}</li>`;
    })
    .join('');
  return `<article class="op"><h3><span class="method ${method}">${method.toUpperCase()}</span> <code>${escapeHtml(
    route,
  )}</code></h3>
<p>${escapeHtml(op.summary || '')}${op.description ? `. ${escapeHtml(op.description)}` : ''}</p>
${paramRows ? `<p>Parameters:</p><ul>${paramRows}</ul>` : ''}
${body ? `<p>Request body: <code>${escapeHtml(schemaLabel(body.schema))}</code></p>` : ''}
<p>Responses:</p><ul>${responses}</ul></article>`;
}

function main() {
  const spec = JSON.parse(fs.readFileSync(specFile, 'utf8'));
  if (!spec.openapi || !spec.info || !spec.paths) throw new Error('not an OpenAPI document');

  const operations = [];
  for (const [route, item] of Object.entries(spec.paths)) {
    for (const method of METHODS) {
      if (item[method]) operations.push(renderOperation(spec, route, method, item[method]));
    }
  }
  const schemas = Object.entries(spec.components.schemas).map(([name, schema]) =>
    renderSchema(name, schema),
  );

  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>${escapeHtml(spec.info.title)} ${escapeHtml(spec.info.version)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#222}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
.op{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:4.5em;text-align:center;color:#fff;border-radius:4px;padding:0 .4em}
.get{background:#2b7bb9}.post{background:#2f9e44}.put,.patch{background:#e67700}.delete{background:#c92a2a}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .6rem;text-align:left}
</style></head><body>
<h1>${escapeHtml(spec.info.title)} <small>v${escapeHtml(spec.info.version)}</small></h1>
<p>${escapeHtml(spec.info.description || '')}</p>
<p>Machine-readable: <a href="openapi.json">openapi.json</a> (OpenAPI ${escapeHtml(spec.openapi)}).</p>
<h2>Endpoints</h2>
${operations.join('\n')}
<h2>Schemas</h2>
${schemas.join('\n')}
</body></html>
`;

  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'openapi.json'), `${JSON.stringify(spec, null, 2)}\n`);
  fs.writeFileSync(path.join(outDir, 'index.html'), html);
  console.log(
    `build:docs: ${operations.length} operations, ${schemas.length} schemas -> ${
      path.relative(process.cwd(), outDir) || '.'
    }/index.html, openapi.json`,
  );
}

try {
  main();
} catch (err) {
  console.error(`build:docs failed: ${err.message}`);
  process.exit(1);
}
