import { createServer } from 'node:http';

/** The benchmark's backend: as cheap as Node can answer, so the bench measures the proxies. */
const port = Number(process.argv[2] ?? 0);
const body = JSON.stringify({ id: 123, name: 'bench user', roles: ['reader'], active: true });
/** The authorizer and the introspection endpoint of the remote-auth scenarios (the gateway caches their answers). */
const introspection = JSON.stringify({ active: true, sub: 'bench-user', scope: 'read', exp: Math.floor(Date.now() / 1000) + 86400 });
const server = createServer((req, res) => {
  req.resume();
  if (req.url === '/authz') {
    res.writeHead(200, { 'x-auth-consumer': 'bench-user', 'cache-control': 'max-age=60', 'content-length': 0 });
    return void res.end();
  }
  if (req.url === '/introspect') {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(introspection) });
    return void res.end(introspection);
  }
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'public, max-age=60',
  });
  res.end(body);
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as { port: number }).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
