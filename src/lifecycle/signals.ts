import type { FastifyBaseLogger } from 'fastify';
import type { GatewayConfig } from '../config/schema';

/** What the signals drive: one Gateway, or the worker pool of a multi-worker process. */
export interface Drainable {
  readonly config: Readonly<GatewayConfig>;
  readonly log: FastifyBaseLogger;
  shutdown(): Promise<void>;
  reloadFromSource(actor: string): Promise<unknown>;
  /** What is still open, logged when the shutdown times out. */
  stillOpen(): Record<string, number>;
}

/**
 * SIGHUP reloads the configuration file (an invalid file is logged and the old config keeps serving).
 * SIGTERM/SIGINT start a graceful drain. The process exits 0 once everything closed, or exits 1
 * past shutdown.timeoutMs, saying so. A second signal does not restart the drain.
 */
export function handleSignals(gateway: Drainable, exit: (code: number) => void = process.exit): void {
  let started = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (started) return;
    started = true;
    const { timeoutMs } = gateway.config.shutdown;
    gateway.log.info({ signal }, 'shutdown requested');
    const hard = setTimeout(() => {
      gateway.log.error({ timeoutMs, ...gateway.stillOpen() }, 'shutdown timed out; exiting with client connections still open');
      exit(1);
    }, timeoutMs);
    hard.unref();
    gateway.shutdown().then(
      () => {
        clearTimeout(hard);
        gateway.log.info('shutdown complete');
        exit(0);
      },
      (err: unknown) => {
        gateway.log.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGHUP', () => {
    gateway.reloadFromSource('SIGHUP').catch(() => undefined);
  });
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
