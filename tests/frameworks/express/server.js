// A real Express 4 upstream for authgate's end-to-end tests: every handler answers with
// what Express handed it (route, params, query as qs parsed it, body as body-parser decoded
// it), and keeps a copy for GET /__seen. Listens on 127.0.0.1:<argv[2]>; exits when its
// stdin closes (the test that started it is gone), so it never outlives the test.
'use strict';
const express = require('express');

const port = Number(process.argv[2]);
const app = express();
// body-parser as most Express apps configure it: JSON (any utf-* charset, as body-parser
// accepts) and urlencoded with qs (extended), both up to 1 MB
app.use(express.json({ type: ['application/json', 'application/*+json'], limit: '1mb' }));
app.use(express.urlencoded({ extended: true, limit: '1mb' }));

const seen = [];
const record = (operation) => (req, res) => {
  const entry = {
    operation,
    method: req.method,
    path: req.path,
    params: req.params,
    query: req.query,
    body: req.body === undefined ? null : req.body,
    contentLength: req.headers['content-length'] || null,
    transferEncoding: req.headers['transfer-encoding'] || null,
  };
  seen.push(entry);
  res.json(entry);
};

app.get('/__seen', (req, res) => res.json(seen));
app.post('/v2/orgs/:orgId/login-links', record('createLoginLink'));
app.post('/partner/v1/orgs', record('createOrg'));
app.get('/things/register', record('register'));
app.get('/things/:id', record('getThing'));
app.get('/things', record('listThings'));
app.post('/things', record('createThing'));
app.post('/things/:id/archive', record('archiveThing'));
app.post('/forms', record('submitForm'));
app.use((err, req, res, next) => {
  // body-parser's refusals (bad JSON, unsupported charset) as Express answers them
  seen.push({ operation: 'error', status: err.status || 500, type: err.type || null });
  res.status(err.status || 500).json({ error: err.type || String(err) });
});

const server = app.listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
process.stdin.on('end', () => { server.close(); process.exit(0); });
process.stdin.resume();
