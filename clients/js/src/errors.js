// Errors and argument checks shared by the client and the server library.
//
// A wrong argument is a programming error in the app, so it fails loudly and
// at once (the client library throws, the server library's promise rejects)
// with a message that names the method and the argument, instead of sending
// something the server would drop silently.

/** Event names socket.io-client reserves for itself; the server never delivers them. */
export const RESERVED_EVENT_NAMES = Object.freeze([
  "connect",
  "connect_error",
  "disconnect",
  "disconnecting",
  "newListener",
  "removeListener",
]);

/** The user events an app backend pushes to a user's sockets. */
export const USER_EVENTS = Object.freeze([
  "user:signin",
  "user:signout",
  "user:pwdchange",
  "user:emailchange",
  "user:phonechange",
]);

/**
 * A wrong or missing argument. `code` is `missing_required_argument` or
 * `invalid_value`; `argument` names the offending argument.
 */
export class ClientError extends Error {
  constructor(code, method, argument, message) {
    super(`${method}: ${message}`);
    this.name = "ClientError";
    this.origin = "client_error";
    this.code = code;
    this.method = method;
    this.argument = argument;
  }
}

export function requireString(method, argument, value) {
  if (value === undefined || value === null) {
    throw new ClientError("missing_required_argument", method, argument,
      `"${argument}" is required`);
  }
  if (typeof value !== "string" || value.length === 0) {
    throw new ClientError("invalid_value", method, argument,
      `"${argument}" must be a non-empty string, got ${describe(value)}`);
  }
  return value;
}

export function requireDefined(method, argument, value) {
  if (value === undefined) {
    throw new ClientError("missing_required_argument", method, argument,
      `"${argument}" is required`);
  }
  return value;
}

export function requireFunction(method, argument, value) {
  if (typeof value !== "function") {
    throw new ClientError(value === undefined ? "missing_required_argument" : "invalid_value",
      method, argument, `"${argument}" must be a function, got ${describe(value)}`);
  }
  return value;
}

/** An optional boolean: `undefined` passes, anything but a boolean throws. */
export function optionalBoolean(method, argument, value) {
  if (value !== undefined && typeof value !== "boolean") {
    throw new ClientError("invalid_value", method, argument,
      `"${argument}" must be a boolean when given, got ${describe(value)}`);
  }
  return value;
}

export function optionalString(method, argument, value) {
  if (value !== undefined && value !== null && (typeof value !== "string" || value === "")) {
    throw new ClientError("invalid_value", method, argument,
      `"${argument}" must be a non-empty string when given, got ${describe(value)}`);
  }
  return value ?? undefined;
}

/** An optional number of milliseconds, at least `min`. */
export function optionalMs(method, argument, value, min) {
  if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value) || value < min)) {
    throw new ClientError("invalid_value", method, argument,
      `"${argument}" must be a number of milliseconds >= ${min}, got ${describe(value)}`);
  }
  return value;
}

/** An event name apps may send: not one socket.io-client reserves. */
export function requireEventName(method, argument, value) {
  requireString(method, argument, value);
  if (RESERVED_EVENT_NAMES.includes(value)) {
    throw new ClientError("invalid_value", method, argument,
      `"${argument}" must not be "${value}", a name socket.io reserves ` +
      `(reserved: ${RESERVED_EVENT_NAMES.join(", ")})`);
  }
  return value;
}

export function requireUserEvent(method, argument, value) {
  requireString(method, argument, value);
  if (!USER_EVENTS.includes(value)) {
    throw new ClientError("invalid_value", method, argument,
      `"${argument}" must be one of ${USER_EVENTS.join(", ")}, got ${describe(value)}`);
  }
  return value;
}

function describe(value) {
  if (typeof value === "string") return JSON.stringify(value);
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `${typeof value} ${String(value)}`;
}
