// Types of ringcast-client/server (the app backend's client of the HTTP API).
import type { MemberData, UserEventName } from "./index.js";

export { ClientError } from "./index.js";
export type { MemberData, UserEventName };
export declare const USER_EVENTS: readonly UserEventName[];
export declare const SERVER_TIMEOUT_MS_DEFAULT: number;

export interface ServerClientOptions {
  /** The server's master token (sent as `Authorization: Bearer`). */
  masterToken: string;
  /** Environment every call addresses (default "default"). */
  envId?: string;
  /** Bound of each HTTP call in ms (default 10000). */
  timeout?: number;
}

/** A failed call: the server's `{error, code}` and HTTP status (0 when no answer came). */
export declare class RealtimeApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly error: string;
  readonly body: unknown;
}

export interface ApiOk {
  ok: true;
}

export declare class ServerClient {
  send(channel: string, eventName: string, message: unknown): Promise<ApiOk>;
  broadcast(eventName: string, message: unknown): Promise<ApiOk>;
  getMembers<T = unknown>(channel: string): Promise<MemberData<T>[]>;
  userEvent(userId: string, eventName: UserEventName, session?: unknown, user?: unknown): Promise<ApiOk>;
}

export declare function createServerClient(url: string, options: ServerClientOptions): ServerClient;
