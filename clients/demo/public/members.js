// The chat page's member list for one channel, kept from two sources: the
// snapshot getMembers() returns and the presence events (join, leave,
// update) that arrive meanwhile. A snapshot can be older than an event that
// overtook it, so events seen while a snapshot was on its way are applied
// again on top of it. No DOM here (the page renders `list()`).

export class MemberList {
  #members = new Map();
  /** Presence events since the oldest snapshot still in flight; null when none is. */
  #sinceSnapshot = null;
  #inFlight = 0;

  /** Call before asking getMembers(); pass its result to `snapshot`. */
  beginSnapshot() {
    this.#inFlight += 1;
    if (this.#sinceSnapshot === null) this.#sinceSnapshot = [];
  }

  /** `members` is getMembers()'s data, or null when it failed. */
  snapshot(members) {
    this.#inFlight = Math.max(0, this.#inFlight - 1);
    if (members) {
      this.#members = new Map(members.map((m) => [m.id, m.data]));
      for (const [kind, id, data] of this.#sinceSnapshot ?? []) this.#apply(kind, id, data);
    }
    if (this.#inFlight === 0) this.#sinceSnapshot = null;
  }

  /** `kind` is "join", "leave" or "update". */
  event(kind, id, data) {
    this.#sinceSnapshot?.push([kind, id, data]);
    this.#apply(kind, id, data);
  }

  /** Forgets everyone (e.g. after leaving the channel). */
  clear() {
    this.#members.clear();
  }

  /** `[{id, data}]` sorted by display name, then id. */
  list() {
    return [...this.#members]
      .map(([id, data]) => ({ id, data }))
      .sort((a, b) => displayName(a).localeCompare(displayName(b)) || (a.id < b.id ? -1 : 1));
  }

  #apply(kind, id, data) {
    if (kind === "leave") this.#members.delete(id);
    else this.#members.set(id, data);
  }
}

export function displayName(member) {
  const name = member.data && typeof member.data === "object" ? member.data.name : undefined;
  return typeof name === "string" && name !== "" ? name : `anonymous ${member.id.slice(0, 4)}`;
}
