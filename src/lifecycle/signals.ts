import type { Gateway } from '../app';

/**
 * SIGHUP reloads the configuration file (an invalid file is logged and the old config keeps serving).
 * SIGTERM/SIGINT start a graceful drain. The process exits 0 once everything closed, or exits 1
 * past shutdown.timeoutMs, saying so. A second signal does not restart the drain.
 */
export function handleSignals(gateway: Gateway, exit: (code: number) => void = process.exit): void {
  let started = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (started) return;
    started = true;
    const { timeoutMs } = gateway.config.shutdown;
    gateway.log.info({ signal }, 'shutdown requested');
    const hard = setTimeout(() => {
      gateway.log.error({ timeoutMs, openConnections: gateway.openConnections }, 'shutdown timed out; exiting with client connections still open');
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
