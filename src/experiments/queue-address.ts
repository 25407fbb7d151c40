/**
 * The address of a grid queue (`--queue URL`), checked when the command line is read; apart from
 * the queue's code so that reading it loads neither BullMQ nor the Redis client.
 */
import { UsageError } from '../util/errors.js';

export interface QueueAddress {
  /** As given (may hold a password). */
  readonly url: string;
  /** For messages: without a password. */
  readonly label: string;
}

/** `redis://[:PASSWORD@]HOST[:PORT][/DB]` (or `rediss://`, TLS). */
export function parseQueueUrl(text: string): QueueAddress {
  const bad = (why: string): never => {
    throw new UsageError(`--queue must be a Redis URL, redis://HOST:PORT[/DB] (${why}); got "${text}"`);
  };
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return bad('not a URL');
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') bad(`the scheme must be redis: or rediss:, not ${u.protocol}`);
  if (u.hostname === '') bad('no host');
  if (u.search !== '' || u.hash !== '') bad('no query or fragment');
  const db = u.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) bad(`the database must be a number, not "${db}"`);
  return { url: text, label: `${u.protocol}//${u.host}${db === '' ? '' : `/${db}`}` };
}
