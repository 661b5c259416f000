// A tiny example backend for the compose file (plain Node, no dependencies): it answers with what
// reached it, so the gateway's work shows (the path after rewriting, the request id, the consumer).
import { createServer } from 'node:http';

const name = process.env.SERVICE_NAME ?? 'echo';
const port = Number(process.env.PORT ?? 3000);

createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    if (req.url === '/health') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      return;
    }
    const answer = { service: name, method: req.method, path: req.url, requestId: req.headers['x-request-id'], consumer: req.headers['x-consumer-id'] ?? null, body: body || null };
    res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json', 'cache-control': 'max-age=10' });
    res.end(JSON.stringify(answer));
  });
}).listen(port, '0.0.0.0', () => console.log(`${name} listening on ${port}`));
