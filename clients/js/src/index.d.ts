// Types of ringcast-client (the browser/Node client with the Agnost realtime API).

/** The user events an app backend pushes to a user's sockets. */
export type UserEventName =
  | "user:signin"
  | "user:signout"
  | "user:pwdchange"
  | "user:emailchange"
  | "user:phonechange";

export declare const USER_EVENTS: readonly UserEventName[];
/** Event names socket.io reserves; send/broadcast refuse them. */
export declare const RESERVED_EVENT_NAMES: readonly string[];
/** Most emits kept while disconnected with bufferMessages on; newer ones are dropped. */
export declare const BUFFERED_MESSAGES_MAX: number;

export interface RealtimeOptions {
  /** Receive your own messages and presence events unless a call says otherwise (default true). */
  echoMessages?: boolean;
  /** Keep emits made while disconnected and send them on reconnect (default true); off: drop them. */
  bufferMessages?: boolean;
  /** After a reconnect, re-send the profile and re-join the channels (default true). */
  autoJoinChannels?: boolean;
  /** First reconnect delay in ms, doubled per attempt up to max(5000, this) (default 1000). */
  reconnectionDelay?: number;
  /** Connect timeout and getMembers bound, in ms (default 20000). */
  timeout?: number;
  /** Socket path on the server (default "/realtime/", or the URL's path). */
  path?: string;
}

export declare const REALTIME_DEFAULTS: Readonly<Required<RealtimeOptions>>;

export interface ClientOptions {
  /** Environment to join (default: the server's "default"). */
  envId?: string;
  apiKey?: string;
  /** Session JWT: puts the socket in its user's room for user events. */
  session?: string;
  realtime?: RealtimeOptions;
}

/** A member of a channel: its socket id and profile (null until it sets one). */
export interface MemberData<T = unknown> {
  id: string;
  data: T | null;
}

/** What channel:join / channel:leave / channel:update listeners receive. */
export interface PresencePayload<T = unknown> {
  channel: string;
  message: MemberData<T>;
}

/** What listeners of a message event receive; channel is null for a broadcast. */
export interface EventPayload<T = unknown> {
  channel: string | null;
  message: T;
}

/** Error of getMembers (the call itself never rejects). */
export interface RealtimeError {
  origin: "client_error";
  code: "not_connected" | "timeout";
  message: string;
}

export type MembersResult<T = unknown> =
  | { data: MemberData<T>[]; errors: null }
  | { data: null; errors: RealtimeError };

/** A wrong or missing argument (thrown at once). */
export declare class ClientError extends Error {
  readonly origin: "client_error";
  readonly code: "missing_required_argument" | "invalid_value";
  readonly method: string;
  readonly argument: string;
}

/** A failed connect: socket.io's error; a refusal by the server carries its `data`. */
export interface ConnectError extends Error {
  data?: unknown;
}

export type Listener = (...args: any[]) => void;
export type UserEventListener = (eventName: UserEventName, session: unknown, user: unknown) => void;

export declare class RealtimeManager {
  open(): void;
  close(): void;
  isConnected(): boolean;
  getSocketId(): string | null;
  onConnect(listener: () => void): void;
  onDisconnect(listener: (reason: string) => void): void;
  onError(listener: (error: ConnectError) => void): void;
  onReconnectAttempt(listener: (attempt: number) => void): void;
  on<T = unknown>(eventName: string, listener: (payload: EventPayload<T>) => void): void;
  on(eventName: string, listener: Listener): void;
  once<T = unknown>(eventName: string, listener: (payload: EventPayload<T>) => void): void;
  once(eventName: string, listener: Listener): void;
  off(eventName: string, listener?: Listener): void;
  onAny(listener: (eventName: string, ...args: any[]) => void): void;
  offAny(listener?: (eventName: string, ...args: any[]) => void): void;
  getListeners(eventName?: string): Listener[];
  join(channel: string, echo?: boolean): void;
  leave(channel: string, echo?: boolean): void;
  send(channel: string, eventName: string, message: unknown, echo?: boolean): void;
  broadcast(eventName: string, message: unknown, echo?: boolean): void;
  updateProfile(data: unknown, echo?: boolean): void;
  onJoin<T = unknown>(listener: (payload: PresencePayload<T>) => void): void;
  onLeave<T = unknown>(listener: (payload: PresencePayload<T>) => void): void;
  onUpdate<T = unknown>(listener: (payload: PresencePayload<T>) => void): void;
  getMembers<T = unknown>(channel: string): Promise<MembersResult<T>>;
  onUserEvent(listener: UserEventListener): void;
}

export interface RingcastClient {
  readonly realtime: RealtimeManager;
}

/** Creates a client; nothing connects until the first use of `realtime`. */
export declare function createClient(url: string, options?: ClientOptions): RingcastClient;
