import * as grpc from '@grpc/grpc-js';

/** Messages are JSON objects on the wire: the tests need gRPC framing and statuses, not protobuf. */
const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer): Record<string, unknown> => JSON.parse(b.toString('utf8')) as Record<string, unknown>,
};

function method(path: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<unknown, unknown> {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  };
}

/** A test service under `name`: Unary echoes, ServerStream sends `count` messages, ClientStream sums, Slow waits `ms`. */
export function echoService(name: string): grpc.ServiceDefinition {
  return {
    Unary: method(`/${name}/Unary`, false, false),
    ServerStream: method(`/${name}/ServerStream`, false, true),
    ClientStream: method(`/${name}/ClientStream`, true, false),
    Slow: method(`/${name}/Slow`, false, false),
  };
}

export const ECHO = 'test.Echo';

/**
 * grpc.health.v1.Health/Check with hand-written protobuf: HealthCheckRequest { string service = 1 }
 * and HealthCheckResponse { ServingStatus status = 1 } (SERVING = 1, NOT_SERVING = 2).
 */
const HEALTH: grpc.ServiceDefinition = {
  Check: {
    path: '/grpc.health.v1.Health/Check',
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: string) => Buffer.from(v ? [0x0a, Buffer.byteLength(v), ...Buffer.from(v)] : []),
    // An object: grpc-js takes a falsy request for a missing one.
    requestDeserialize: (b: Buffer) => ({ service: b.length > 2 ? b.subarray(2).toString('utf8') : '' }),
    responseSerialize: (status: number) => Buffer.from([0x08, status]),
    responseDeserialize: (b: Buffer) => b[1],
  },
};

export interface GrpcUpstream {
  port: number;
  url: string;
  /** Metadata of every call received, in order. */
  seen: grpc.Metadata[];
  /** What Check answers: SERVING (1) or NOT_SERVING (2). */
  health: { status: number };
  close(): Promise<void>;
}

/** A real gRPC server (grpc-js) on 127.0.0.1:0 serving the echo service under `ECHO` and grpc.health.v1. */
export async function startGrpcUpstream(): Promise<GrpcUpstream> {
  const server = new grpc.Server();
  const seen: grpc.Metadata[] = [];
  const health = { status: 1 };
  server.addService(echoService(ECHO), {
    Unary(call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) {
      seen.push(call.metadata);
      if (call.request.fail) {
        cb({ code: grpc.status.NOT_FOUND, details: 'no such thing', metadata: trailer('x-why', 'missing') });
        return;
      }
      const deadline = call.getDeadline();
      const at = deadline instanceof Date ? deadline.getTime() : deadline;
      cb(null, { echo: call.request, deadlineMs: Number.isFinite(at) ? at - Date.now() : null }, trailer('x-trailer', 'kept'));
    },
    ServerStream(call: grpc.ServerWritableStream<Record<string, unknown>, unknown>) {
      seen.push(call.metadata);
      const n = Number(call.request.count);
      for (let i = 0; i < n; i++) call.write({ i });
      call.end(trailer('x-count', String(n)));
    },
    ClientStream(call: grpc.ServerReadableStream<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) {
      seen.push(call.metadata);
      let sum = 0;
      call.on('data', (m: Record<string, unknown>) => (sum += Number(m.n)));
      call.on('end', () => cb(null, { sum }));
    },
    Slow(call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) {
      seen.push(call.metadata);
      const timer = setTimeout(() => cb(null, { slept: true }), Number(call.request.ms));
      call.on('cancelled', () => clearTimeout(timer));
    },
  });
  server.addService(HEALTH, {
    Check(_call: grpc.ServerUnaryCall<{ service: string }, number>, cb: grpc.sendUnaryData<number>) {
      cb(null, health.status);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    health,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())).then(() => server.forceShutdown()),
  };
}

function trailer(name: string, value: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set(name, value);
  return m;
}

/** A grpc-js client of the echo service at `address` (host:port), over h2c. */
export function echoClient(address: string, credentials = grpc.credentials.createInsecure()): grpc.Client & Record<string, (...args: unknown[]) => unknown> {
  const Ctor = grpc.makeGenericClientConstructor(echoService(ECHO), 'Echo');
  return new Ctor(address, credentials) as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
}

export interface UnaryResult {
  err: grpc.ServiceError | null;
  value: Record<string, unknown> | undefined;
  metadata: grpc.Metadata | null;
  trailers: grpc.Metadata | null;
}

/** A unary call; resolves with the error or the answer, and the header and trailer metadata. */
export function unary(client: grpc.Client, path: string, request: unknown, metadata = new grpc.Metadata(), options: grpc.CallOptions = {}): Promise<UnaryResult> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | null = null;
    let trailers: grpc.Metadata | null = null;
    let result: { err: grpc.ServiceError | null; value: Record<string, unknown> | undefined } | null = null;
    let ended = false;
    const done = (): void => {
      if (result !== null && ended) resolve({ ...result, metadata: headers, trailers });
    };
    const call = client.makeUnaryRequest(path, json.serialize, json.deserialize, request, metadata, options, (err, value) => {
      result = { err, value };
      done();
    });
    call.on('metadata', (m) => (headers = m));
    call.on('status', (s: grpc.StatusObject) => {
      trailers = s.metadata;
      ended = true;
      done();
    });
  });
}

export { grpc, json };
