// Dynamic tools: tools the client implements as plain functions. The model
// sees them as function tools; Session.events() answers their calls.
import { create } from "@bufbuild/protobuf";
import {
  DynamicToolSchema,
  type DynamicTool,
  type DynamicToolCallRequest,
} from "./gen/keel/v1/session_pb.js";

/** What the model is told about a tool. */
export interface ToolSpec {
  /** Optional; the model sees `<namespace>__<name>` when set. */
  namespace?: string;
  /** Letters, digits, '_' and '-'. */
  name: string;
  description: string;
  /** The JSON Schema of the arguments (an object, or its JSON text). */
  inputSchema: Record<string, unknown> | string;
}

/**
 * Implements a tool: gets the parsed arguments and the request, returns the
 * text the model receives. A thrown error answers the call with
 * success=false and the error's message.
 */
export type ToolFn<Args> = (
  args: Args,
  request: DynamicToolCallRequest,
) => Promise<string> | string;

/** A tool with its implementation; pass it to createSession({ tools }). */
export interface Tool<Args = any> {
  readonly spec: DynamicTool;
  readonly run: ToolFn<Args>;
}

/** Declares a dynamic tool implemented by `run`. */
export function tool<Args = any>(spec: ToolSpec, run: ToolFn<Args>): Tool<Args> {
  return {
    spec: create(DynamicToolSchema, {
      namespace: spec.namespace ?? "",
      name: spec.name,
      description: spec.description,
      inputSchemaJson:
        typeof spec.inputSchema === "string"
          ? spec.inputSchema
          : JSON.stringify(spec.inputSchema),
    }),
    run,
  };
}

/** The tool a request calls, if the list has it. */
export function findTool(
  tools: readonly Tool[],
  req: DynamicToolCallRequest,
): Tool | undefined {
  return tools.find(
    (t) => t.spec.namespace === req.namespace && t.spec.name === req.tool,
  );
}

/** What a tool's run gives the model. */
export interface ToolOutput {
  success: boolean;
  text: string;
}

/** Runs a tool on a request: its text, or the error that it threw. Never rejects. */
export async function runTool(t: Tool, req: DynamicToolCallRequest): Promise<ToolOutput> {
  let args: unknown;
  try {
    args = req.arguments.trim() === "" ? {} : JSON.parse(req.arguments);
  } catch (e) {
    return { success: false, text: `invalid JSON arguments: ${message(e)}` };
  }
  try {
    const text = await t.run(args, req);
    if (typeof text !== "string") {
      return { success: false, text: `tool ${req.tool} returned ${typeof text}, not a string` };
    }
    return { success: true, text };
  } catch (e) {
    return { success: false, text: message(e) };
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
