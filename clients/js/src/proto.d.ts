import * as $protobuf from "protobufjs";
import Long = require("long");
/** Namespace wspool. */
export namespace wspool {

    /** Properties of a SendMsg. */
    interface ISendMsg {

        /** SendMsg cmd */
        cmd?: (number|null);

        /** SendMsg timestamp */
        timestamp?: (number|Long|null);

        /** SendMsg fromClientId */
        fromClientId?: (string|null);

        /** SendMsg toClientId */
        toClientId?: (string|null);

        /** SendMsg cmdData */
        cmdData?: (Uint8Array|null);

        /** SendMsg msgId */
        msgId?: (string|null);

        /** SendMsg status */
        status?: (number|null);

        /** SendMsg callbackMsg */
        callbackMsg?: (string|null);

        /** SendMsg cmdkey */
        cmdkey?: (string|null);

        /** SendMsg priority */
        priority?: (number|null);

        /** SendMsg localId */
        localId?: (number|null);

        /** SendMsg pageKey */
        pageKey?: (string|null);

        /** SendMsg channel */
        channel?: (string[]|null);

        /** SendMsg pageId */
        pageId?: (string|null);

        /** SendMsg msg */
        msg?: (string|null);

        /** SendMsg Desc */
        Desc?: (string|null);
    }

    /** Represents a SendMsg. */
    class SendMsg implements ISendMsg {

        /**
         * Constructs a new SendMsg.
         * @param [properties] Properties to set
         */
        constructor(properties?: wspool.ISendMsg);

        /** SendMsg cmd. */
        public cmd: number;

        /** SendMsg timestamp. */
        public timestamp: (number|Long);

        /** SendMsg fromClientId. */
        public fromClientId: string;

        /** SendMsg toClientId. */
        public toClientId: string;

        /** SendMsg cmdData. */
        public cmdData: Uint8Array;

        /** SendMsg msgId. */
        public msgId: string;

        /** SendMsg status. */
        public status: number;

        /** SendMsg callbackMsg. */
        public callbackMsg: string;

        /** SendMsg cmdkey. */
        public cmdkey: string;

        /** SendMsg priority. */
        public priority: number;

        /** SendMsg localId. */
        public localId: number;

        /** SendMsg pageKey. */
        public pageKey: string;

        /** SendMsg channel. */
        public channel: string[];

        /** SendMsg pageId. */
        public pageId: string;

        /** SendMsg msg. */
        public msg: string;

        /** SendMsg Desc. */
        public Desc: string;

        /**
         * Encodes the specified SendMsg message. Does not implicitly {@link wspool.SendMsg.verify|verify} messages.
         * @param message SendMsg message or plain object to encode
         * @param [writer] Writer to encode to
         * @returns Writer
         */
        public static encode(message: wspool.ISendMsg, writer?: $protobuf.Writer): $protobuf.Writer;

        /**
         * Decodes a SendMsg message from the specified reader or buffer.
         * @param reader Reader or buffer to decode from
         * @param [length] Message length if known beforehand
         * @returns SendMsg
         * @throws {Error} If the payload is not a reader or valid buffer
         * @throws {$protobuf.util.ProtocolError} If required fields are missing
         */
        public static decode(reader: ($protobuf.Reader|Uint8Array), length?: number): wspool.SendMsg;

        /**
         * Creates a SendMsg message from a plain object. Also converts values to their respective internal types.
         * @param object Plain object
         * @returns SendMsg
         */
        public static fromObject(object: { [k: string]: any }): wspool.SendMsg;

        /**
         * Creates a plain object from a SendMsg message. Also converts values to other types if specified.
         * @param message SendMsg
         * @param [options] Conversion options
         * @returns Plain object
         */
        public static toObject(message: wspool.SendMsg, options?: $protobuf.IConversionOptions): { [k: string]: any };

        /**
         * Converts this SendMsg to JSON.
         * @returns JSON object
         */
        public toJSON(): { [k: string]: any };
    }
}
