/*eslint-disable block-scoped-var, id-length, no-control-regex, no-magic-numbers, no-prototype-builtins, no-redeclare, no-shadow, no-var, sort-vars*/
import $protobuf from "protobufjs/minimal.js";

// Common aliases
const $Reader = $protobuf.Reader, $Writer = $protobuf.Writer, $util = $protobuf.util;

// Exported root namespace
const $root = $protobuf.roots["default"] || ($protobuf.roots["default"] = {});

export const wspool = $root.wspool = (() => {

    /**
     * Namespace wspool.
     * @exports wspool
     * @namespace
     */
    const wspool = {};

    wspool.SendMsg = (function() {

        /**
         * Properties of a SendMsg.
         * @memberof wspool
         * @interface ISendMsg
         * @property {number|null} [cmd] SendMsg cmd
         * @property {number|Long|null} [timestamp] SendMsg timestamp
         * @property {string|null} [fromClientId] SendMsg fromClientId
         * @property {string|null} [toClientId] SendMsg toClientId
         * @property {Uint8Array|null} [cmdData] SendMsg cmdData
         * @property {string|null} [msgId] SendMsg msgId
         * @property {number|null} [status] SendMsg status
         * @property {string|null} [callbackMsg] SendMsg callbackMsg
         * @property {string|null} [cmdkey] SendMsg cmdkey
         * @property {number|null} [priority] SendMsg priority
         * @property {number|null} [localId] SendMsg localId
         * @property {string|null} [pageKey] SendMsg pageKey
         * @property {Array.<string>|null} [channel] SendMsg channel
         * @property {string|null} [pageId] SendMsg pageId
         * @property {string|null} [msg] SendMsg msg
         * @property {string|null} [Desc] SendMsg Desc
         */

        /**
         * Constructs a new SendMsg.
         * @memberof wspool
         * @classdesc Represents a SendMsg.
         * @implements ISendMsg
         * @constructor
         * @param {wspool.ISendMsg=} [properties] Properties to set
         */
        function SendMsg(properties) {
            this.channel = [];
            if (properties)
                for (let keys = Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        }

        /**
         * SendMsg cmd.
         * @member {number} cmd
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.cmd = 0;

        /**
         * SendMsg timestamp.
         * @member {number|Long} timestamp
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.timestamp = $util.Long ? $util.Long.fromBits(0,0,false) : 0;

        /**
         * SendMsg fromClientId.
         * @member {string} fromClientId
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.fromClientId = "";

        /**
         * SendMsg toClientId.
         * @member {string} toClientId
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.toClientId = "";

        /**
         * SendMsg cmdData.
         * @member {Uint8Array} cmdData
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.cmdData = $util.newBuffer([]);

        /**
         * SendMsg msgId.
         * @member {string} msgId
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.msgId = "";

        /**
         * SendMsg status.
         * @member {number} status
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.status = 0;

        /**
         * SendMsg callbackMsg.
         * @member {string} callbackMsg
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.callbackMsg = "";

        /**
         * SendMsg cmdkey.
         * @member {string} cmdkey
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.cmdkey = "";

        /**
         * SendMsg priority.
         * @member {number} priority
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.priority = 0;

        /**
         * SendMsg localId.
         * @member {number} localId
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.localId = 0;

        /**
         * SendMsg pageKey.
         * @member {string} pageKey
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.pageKey = "";

        /**
         * SendMsg channel.
         * @member {Array.<string>} channel
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.channel = $util.emptyArray;

        /**
         * SendMsg pageId.
         * @member {string} pageId
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.pageId = "";

        /**
         * SendMsg msg.
         * @member {string} msg
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.msg = "";

        /**
         * SendMsg Desc.
         * @member {string} Desc
         * @memberof wspool.SendMsg
         * @instance
         */
        SendMsg.prototype.Desc = "";

        /**
         * Encodes the specified SendMsg message. Does not implicitly {@link wspool.SendMsg.verify|verify} messages.
         * @function encode
         * @memberof wspool.SendMsg
         * @static
         * @param {wspool.ISendMsg} message SendMsg message or plain object to encode
         * @param {$protobuf.Writer} [writer] Writer to encode to
         * @returns {$protobuf.Writer} Writer
         */
        SendMsg.encode = function encode(message, writer, q) {
            if (!writer)
                writer = $Writer.create();
            if (q === undefined)
                q = 0;
            if (q > $util.recursionLimit)
                throw Error("max depth exceeded");
            if (message.cmd != null && Object.hasOwnProperty.call(message, "cmd"))
                writer.uint32(/* id 1, wireType 0 =*/8).int32(message.cmd);
            if (message.timestamp != null && Object.hasOwnProperty.call(message, "timestamp"))
                writer.uint32(/* id 2, wireType 0 =*/16).int64(message.timestamp);
            if (message.fromClientId != null && Object.hasOwnProperty.call(message, "fromClientId"))
                writer.uint32(/* id 3, wireType 2 =*/26).string(message.fromClientId);
            if (message.toClientId != null && Object.hasOwnProperty.call(message, "toClientId"))
                writer.uint32(/* id 4, wireType 2 =*/34).string(message.toClientId);
            if (message.cmdData != null && Object.hasOwnProperty.call(message, "cmdData"))
                writer.uint32(/* id 5, wireType 2 =*/42).bytes(message.cmdData);
            if (message.msgId != null && Object.hasOwnProperty.call(message, "msgId"))
                writer.uint32(/* id 6, wireType 2 =*/50).string(message.msgId);
            if (message.status != null && Object.hasOwnProperty.call(message, "status"))
                writer.uint32(/* id 7, wireType 0 =*/56).int32(message.status);
            if (message.callbackMsg != null && Object.hasOwnProperty.call(message, "callbackMsg"))
                writer.uint32(/* id 8, wireType 2 =*/66).string(message.callbackMsg);
            if (message.cmdkey != null && Object.hasOwnProperty.call(message, "cmdkey"))
                writer.uint32(/* id 9, wireType 2 =*/74).string(message.cmdkey);
            if (message.priority != null && Object.hasOwnProperty.call(message, "priority"))
                writer.uint32(/* id 10, wireType 0 =*/80).int32(message.priority);
            if (message.localId != null && Object.hasOwnProperty.call(message, "localId"))
                writer.uint32(/* id 11, wireType 0 =*/88).int32(message.localId);
            if (message.pageKey != null && Object.hasOwnProperty.call(message, "pageKey"))
                writer.uint32(/* id 12, wireType 2 =*/98).string(message.pageKey);
            if (message.channel != null && message.channel.length)
                for (let i = 0; i < message.channel.length; ++i)
                    writer.uint32(/* id 13, wireType 2 =*/106).string(message.channel[i]);
            if (message.pageId != null && Object.hasOwnProperty.call(message, "pageId"))
                writer.uint32(/* id 14, wireType 2 =*/114).string(message.pageId);
            if (message.msg != null && Object.hasOwnProperty.call(message, "msg"))
                writer.uint32(/* id 15, wireType 2 =*/122).string(message.msg);
            if (message.Desc != null && Object.hasOwnProperty.call(message, "Desc"))
                writer.uint32(/* id 16, wireType 2 =*/130).string(message.Desc);
            return writer;
        };

        /**
         * Decodes a SendMsg message from the specified reader or buffer.
         * @function decode
         * @memberof wspool.SendMsg
         * @static
         * @param {$protobuf.Reader|Uint8Array} reader Reader or buffer to decode from
         * @param {number} [length] Message length if known beforehand
         * @returns {wspool.SendMsg} SendMsg
         * @throws {Error} If the payload is not a reader or valid buffer
         * @throws {$protobuf.util.ProtocolError} If required fields are missing
         */
        SendMsg.decode = function decode(reader, length, error, long) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (long === undefined)
                long = 0;
            if (long > $Reader.recursionLimit)
                throw Error("maximum nesting depth exceeded");
            let end, message;
            if (length === undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = new $root.wspool.SendMsg();
            while (reader.pos < end) {
                let tag = reader.uint32();
                if (tag === error)
                    break;
                switch (tag >>> 3) {
                case 1: {
                        message.cmd = reader.int32();
                        break;
                    }
                case 2: {
                        message.timestamp = reader.int64();
                        break;
                    }
                case 3: {
                        message.fromClientId = reader.string();
                        break;
                    }
                case 4: {
                        message.toClientId = reader.string();
                        break;
                    }
                case 5: {
                        message.cmdData = reader.bytes();
                        break;
                    }
                case 6: {
                        message.msgId = reader.string();
                        break;
                    }
                case 7: {
                        message.status = reader.int32();
                        break;
                    }
                case 8: {
                        message.callbackMsg = reader.string();
                        break;
                    }
                case 9: {
                        message.cmdkey = reader.string();
                        break;
                    }
                case 10: {
                        message.priority = reader.int32();
                        break;
                    }
                case 11: {
                        message.localId = reader.int32();
                        break;
                    }
                case 12: {
                        message.pageKey = reader.string();
                        break;
                    }
                case 13: {
                        if (!(message.channel && message.channel.length))
                            message.channel = [];
                        message.channel.push(reader.string());
                        break;
                    }
                case 14: {
                        message.pageId = reader.string();
                        break;
                    }
                case 15: {
                        message.msg = reader.string();
                        break;
                    }
                case 16: {
                        message.Desc = reader.string();
                        break;
                    }
                default:
                    reader.skipType(tag & 7, long);
                    break;
                }
            }
            if (length !== undefined) {
                if (reader.pos !== end)
                    throw RangeError("index out of range");
                reader.len = length;
            }
            return message;
        };

        /**
         * Creates a SendMsg message from a plain object. Also converts values to their respective internal types.
         * @function fromObject
         * @memberof wspool.SendMsg
         * @static
         * @param {Object.<string,*>} object Plain object
         * @returns {wspool.SendMsg} SendMsg
         */
        SendMsg.fromObject = function fromObject(object, long) {
            if (object instanceof $root.wspool.SendMsg)
                return object;
            if (!$util.isObject(object))
                throw TypeError(".wspool.SendMsg: object expected");
            if (long === undefined)
                long = 0;
            if (long > $util.recursionLimit)
                throw Error("maximum nesting depth exceeded");
            let message = new $root.wspool.SendMsg();
            if (object.cmd != null)
                message.cmd = object.cmd | 0;
            if (object.timestamp != null)
                if ($util.Long)
                    message.timestamp = $util.Long.fromValue(object.timestamp, false);
                else if (typeof object.timestamp === "string")
                    message.timestamp = parseInt(object.timestamp, 10);
                else if (typeof object.timestamp === "number")
                    message.timestamp = object.timestamp;
                else if (typeof object.timestamp === "object")
                    message.timestamp = new $util.LongBits(object.timestamp.low >>> 0, object.timestamp.high >>> 0).toNumber();
            if (object.fromClientId != null)
                message.fromClientId = String(object.fromClientId);
            if (object.toClientId != null)
                message.toClientId = String(object.toClientId);
            if (object.cmdData != null)
                if (typeof object.cmdData === "string")
                    $util.base64.decode(object.cmdData, message.cmdData = $util.newBuffer($util.base64.length(object.cmdData)), 0);
                else if (object.cmdData.length >= 0)
                    message.cmdData = object.cmdData;
            if (object.msgId != null)
                message.msgId = String(object.msgId);
            if (object.status != null)
                message.status = object.status | 0;
            if (object.callbackMsg != null)
                message.callbackMsg = String(object.callbackMsg);
            if (object.cmdkey != null)
                message.cmdkey = String(object.cmdkey);
            if (object.priority != null)
                message.priority = object.priority | 0;
            if (object.localId != null)
                message.localId = object.localId | 0;
            if (object.pageKey != null)
                message.pageKey = String(object.pageKey);
            if (object.channel) {
                if (!Array.isArray(object.channel))
                    throw TypeError(".wspool.SendMsg.channel: array expected");
                message.channel = [];
                for (let i = 0; i < object.channel.length; ++i)
                    message.channel[i] = String(object.channel[i]);
            }
            if (object.pageId != null)
                message.pageId = String(object.pageId);
            if (object.msg != null)
                message.msg = String(object.msg);
            if (object.Desc != null)
                message.Desc = String(object.Desc);
            return message;
        };

        /**
         * Creates a plain object from a SendMsg message. Also converts values to other types if specified.
         * @function toObject
         * @memberof wspool.SendMsg
         * @static
         * @param {wspool.SendMsg} message SendMsg
         * @param {$protobuf.IConversionOptions} [options] Conversion options
         * @returns {Object.<string,*>} Plain object
         */
        SendMsg.toObject = function toObject(message, options, q) {
            if (!options)
                options = {};
            if (q === undefined)
                q = 0;
            if (q > $util.recursionLimit)
                throw Error("max depth exceeded");
            let object = {};
            if (options.arrays || options.defaults)
                object.channel = [];
            if (options.defaults) {
                object.cmd = 0;
                if ($util.Long) {
                    let long = new $util.Long(0, 0, false);
                    object.timestamp = options.longs === String ? long.toString() : options.longs === Number ? long.toNumber() : typeof BigInt !== "undefined" && options.longs === BigInt ? long.toBigInt() : long;
                } else
                    object.timestamp = options.longs === String ? "0" : typeof BigInt !== "undefined" && options.longs === BigInt ? BigInt("0") : 0;
                object.fromClientId = "";
                object.toClientId = "";
                if (options.bytes === String)
                    object.cmdData = "";
                else {
                    object.cmdData = [];
                    if (options.bytes !== Array)
                        object.cmdData = $util.newBuffer(object.cmdData);
                }
                object.msgId = "";
                object.status = 0;
                object.callbackMsg = "";
                object.cmdkey = "";
                object.priority = 0;
                object.localId = 0;
                object.pageKey = "";
                object.pageId = "";
                object.msg = "";
                object.Desc = "";
            }
            if (message.cmd != null && Object.hasOwnProperty.call(message, "cmd"))
                object.cmd = message.cmd;
            if (message.timestamp != null && Object.hasOwnProperty.call(message, "timestamp"))
                if (typeof BigInt !== "undefined" && options.longs === BigInt)
                    object.timestamp = typeof message.timestamp === "number" ? BigInt(message.timestamp) : $util.Long.fromBits(message.timestamp.low >>> 0, message.timestamp.high >>> 0, false).toBigInt();
                else if (typeof message.timestamp === "number")
                    object.timestamp = options.longs === String ? String(message.timestamp) : message.timestamp;
                else
                    object.timestamp = options.longs === String ? $util.Long.prototype.toString.call(message.timestamp) : options.longs === Number ? new $util.LongBits(message.timestamp.low >>> 0, message.timestamp.high >>> 0).toNumber() : message.timestamp;
            if (message.fromClientId != null && Object.hasOwnProperty.call(message, "fromClientId"))
                object.fromClientId = message.fromClientId;
            if (message.toClientId != null && Object.hasOwnProperty.call(message, "toClientId"))
                object.toClientId = message.toClientId;
            if (message.cmdData != null && Object.hasOwnProperty.call(message, "cmdData"))
                object.cmdData = options.bytes === String ? $util.base64.encode(message.cmdData, 0, message.cmdData.length) : options.bytes === Array ? Array.prototype.slice.call(message.cmdData) : message.cmdData;
            if (message.msgId != null && Object.hasOwnProperty.call(message, "msgId"))
                object.msgId = message.msgId;
            if (message.status != null && Object.hasOwnProperty.call(message, "status"))
                object.status = message.status;
            if (message.callbackMsg != null && Object.hasOwnProperty.call(message, "callbackMsg"))
                object.callbackMsg = message.callbackMsg;
            if (message.cmdkey != null && Object.hasOwnProperty.call(message, "cmdkey"))
                object.cmdkey = message.cmdkey;
            if (message.priority != null && Object.hasOwnProperty.call(message, "priority"))
                object.priority = message.priority;
            if (message.localId != null && Object.hasOwnProperty.call(message, "localId"))
                object.localId = message.localId;
            if (message.pageKey != null && Object.hasOwnProperty.call(message, "pageKey"))
                object.pageKey = message.pageKey;
            if (message.channel && message.channel.length) {
                object.channel = [];
                for (let j = 0; j < message.channel.length; ++j)
                    object.channel[j] = message.channel[j];
            }
            if (message.pageId != null && Object.hasOwnProperty.call(message, "pageId"))
                object.pageId = message.pageId;
            if (message.msg != null && Object.hasOwnProperty.call(message, "msg"))
                object.msg = message.msg;
            if (message.Desc != null && Object.hasOwnProperty.call(message, "Desc"))
                object.Desc = message.Desc;
            return object;
        };

        /**
         * Converts this SendMsg to JSON.
         * @function toJSON
         * @memberof wspool.SendMsg
         * @instance
         * @returns {Object.<string,*>} JSON object
         */
        SendMsg.prototype.toJSON = function toJSON() {
            return this.constructor.toObject(this, $protobuf.util.toJSONOptions);
        };

        return SendMsg;
    })();

    return wspool;
})();

export { $root as default };
