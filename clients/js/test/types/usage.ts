// Compiled (never run) by test/types.test.mjs: the published types must
// accept the documented usage and reject misuse (the @ts-expect-error lines).
import { createClient, type MemberData, type PresencePayload } from "ringcast-client";
import { createServerClient, RealtimeApiError } from "ringcast-client/server";

const client = createClient("http://127.0.0.1:4000", {
  envId: "default",
  session: "jwt",
  realtime: { echoMessages: false, bufferMessages: true, autoJoinChannels: true, reconnectionDelay: 500, timeout: 5000 },
});
const rt = client.realtime;
rt.onConnect(() => {});
rt.onDisconnect((reason: string) => void reason);
rt.onError((err) => void err.data);
rt.onReconnectAttempt((attempt: number) => void attempt);
rt.join("room");
rt.join("room", true);
rt.leave("room", false);
rt.send("room", "chat", { text: "hi" });
rt.broadcast("news", 1, true);
rt.updateProfile({ name: "ann" });
rt.on<{ text: string }>("chat", (payload) => {
  const text: string = payload.message.text;
  const channel: string | null = payload.channel;
  void text;
  void channel;
});
rt.onJoin<{ name: string }>((p: PresencePayload<{ name: string }>) => void p.message.data?.name);
rt.onUserEvent((eventName, session, user) => void [eventName, session, user]);
const socketId: string | null = rt.getSocketId();
const connected: boolean = rt.isConnected();
void socketId;
void connected;

async function members(): Promise<void> {
  const result = await rt.getMembers<{ name: string }>("room");
  if (result.errors === null) {
    const first: MemberData<{ name: string }> | undefined = result.data[0];
    void first;
  } else {
    const code: "not_connected" | "timeout" = result.errors.code;
    void code;
  }
  const server = createServerClient("http://127.0.0.1:4000", { masterToken: "t", envId: "default" });
  await server.send("room", "chat", { text: "hi" });
  await server.broadcast("news", 1);
  const list = await server.getMembers("room");
  void list[0]?.id;
  await server.userEvent("user-1", "user:signout", null, { id: "user-1" });
  try {
    await server.broadcast("x", 1);
  } catch (err) {
    if (err instanceof RealtimeApiError) void [err.status, err.code, err.error];
  }
  // @ts-expect-error not a user event
  await server.userEvent("user-1", "user:deleted");
}
void members;

// @ts-expect-error the channel is required
rt.join();
// @ts-expect-error echoMessages is a boolean
createClient("http://x", { realtime: { echoMessages: "yes" } });
// @ts-expect-error masterToken is required
createServerClient("http://x", {});
