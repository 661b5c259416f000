interface Entry<V> {
  value: V;
  until: number;
}

/**
 * A bounded map whose entries stop being returned at their own deadline. When full, the oldest
 * insertion goes first: cheap, and good enough for caches whose entries all expire anyway.
 */
export class TtlCache<V> {
  private readonly map = new Map<string, Entry<V>>();

  constructor(private readonly maxEntries: number) {}

  /** The value stored under `key` while `now` is before its deadline, else undefined. */
  get(key: string, now: number): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (now >= e.until) {
      this.map.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: string, value: V, until: number): void {
    if (this.maxEntries === 0) return;
    this.map.delete(key);
    if (this.map.size >= this.maxEntries) this.map.delete(this.map.keys().next().value!);
    this.map.set(key, { value, until });
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}
