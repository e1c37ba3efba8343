//! Whole messages by direction, and the JSON object ↔ message step shared by both.
//!
//! A line is a request or notification when it has a string `method` (even if it also
//! carries `"error":null`, as some pools add to notifications), and a response when it has
//! no `method` but has `result` or `error`. [`ClientMessage`] is what a miner sends (and what
//! the proxy's downstream side decodes); [`ServerMessage`] is what a pool sends (the
//! upstream side decodes it). Both directions include [`Response`]s because each side can
//! also answer the other's requests (e.g. a miner answering `client.get_version`).

use bytes::{BufMut, BytesMut};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::client::ClientRequest;
use super::error::{FieldError, Sv1Error};
use super::id::Id;
use super::response::Response;
use super::server::ServerNotification;

/// A message a miner sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// A request (its id is echoed by the answer).
    Request {
        /// The id as received.
        id: Id,
        /// The typed request.
        request: ClientRequest,
    },
    /// An answer to a request from the pool (e.g. `client.get_version`).
    Response(Response),
}

/// A message a pool sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// A notification (`id` is usually `null`) or a pool's own request such as
    /// `client.get_version` (non-null `id`: answer it).
    Notification {
        /// The id as received (`null` or absent for true notifications).
        id: Id,
        /// The typed notification.
        notification: ServerNotification,
    },
    /// An answer to one of the miner's requests.
    Response(Response),
}

/// A message type the codec can carry: read from one JSON line, written as one.
pub trait Sv1Message: Sized {
    /// Builds a message from the parsed JSON value of one line.
    ///
    /// # Errors
    /// An [`Sv1Error`] describing why this value is not a valid message.
    fn from_json(value: Value) -> Result<Self, Sv1Error>;

    /// Writes the message as compact JSON without the trailing newline.
    ///
    /// # Errors
    /// Only what the writer reports; serialising these types does not fail otherwise.
    fn write_json<W: std::io::Write>(&self, writer: W) -> serde_json::Result<()>;

    /// Parses one line (without or with its `\r\n`/`\n`, surrounding whitespace allowed).
    ///
    /// # Errors
    /// [`Sv1Error::NotUtf8`], [`Sv1Error::InvalidJson`] or any error of
    /// [`Sv1Message::from_json`].
    fn from_line(line: &[u8]) -> Result<Self, Sv1Error> {
        let text = std::str::from_utf8(line).map_err(|_| Sv1Error::NotUtf8)?;
        let value: Value =
            serde_json::from_str(text.trim()).map_err(|e| Sv1Error::InvalidJson(e.to_string()))?;
        Self::from_json(value)
    }

    /// Appends the message and its terminating `\n` to `dst`.
    ///
    /// # Errors
    /// As [`Sv1Message::write_json`].
    fn encode_line(&self, dst: &mut BytesMut) -> serde_json::Result<()> {
        self.write_json(dst.writer())?;
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// A JSON object split into the members that classify it.
enum Shape {
    Call {
        id: Id,
        method: String,
        params: Value,
    },
    Response(Response),
}

fn classify(value: Value) -> Result<Shape, Sv1Error> {
    let Value::Object(mut map) = value else {
        return Err(Sv1Error::NotAnObject);
    };
    let id = Id::from_json(map.remove("id"))?;
    match map.remove("method") {
        Some(Value::String(method)) => {
            let params = map.remove("params").unwrap_or(Value::Null);
            Ok(Shape::Call { id, method, params })
        }
        Some(Value::Null) | None => response_shape(id, map),
        Some(_) => Err(Sv1Error::InvalidMethod),
    }
}

fn response_shape(id: Id, mut map: Map<String, Value>) -> Result<Shape, Sv1Error> {
    let result = map.remove("result");
    let error = map.remove("error");
    if result.is_none() && error.is_none() {
        return Err(Sv1Error::NotAMessage);
    }
    Ok(Shape::Response(Response::from_members(id, result, error)))
}

fn invalid(id: Id, method: String) -> impl FnOnce(FieldError) -> Sv1Error {
    move |error| Sv1Error::InvalidParams { id, method, error }
}

/// Serialises `{"id":..,"method":..,"params":..}` in the order miners and pools use.
struct Call<'a> {
    id: &'a Id,
    method: &'a str,
    params: Value,
}

impl Serialize for Call<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Call", 3)?;
        s.serialize_field("id", self.id)?;
        s.serialize_field("method", self.method)?;
        s.serialize_field("params", &self.params)?;
        s.end()
    }
}

impl Sv1Message for ClientMessage {
    fn from_json(value: Value) -> Result<Self, Sv1Error> {
        match classify(value)? {
            Shape::Call { id, method, params } => match ClientRequest::parse(&method, &params) {
                Ok(request) => Ok(ClientMessage::Request { id, request }),
                Err(e) => Err(invalid(id, method)(e)),
            },
            Shape::Response(r) => Ok(ClientMessage::Response(r)),
        }
    }

    fn write_json<W: std::io::Write>(&self, writer: W) -> serde_json::Result<()> {
        match self {
            ClientMessage::Request { id, request } => serde_json::to_writer(
                writer,
                &Call {
                    id,
                    method: request.method(),
                    params: request.params(),
                },
            ),
            ClientMessage::Response(r) => serde_json::to_writer(writer, r),
        }
    }
}

impl Sv1Message for ServerMessage {
    fn from_json(value: Value) -> Result<Self, Sv1Error> {
        match classify(value)? {
            Shape::Call { id, method, params } => match ServerNotification::parse(&method, &params)
            {
                Ok(notification) => Ok(ServerMessage::Notification { id, notification }),
                Err(e) => Err(invalid(id, method)(e)),
            },
            Shape::Response(r) => Ok(ServerMessage::Response(r)),
        }
    }

    fn write_json<W: std::io::Write>(&self, writer: W) -> serde_json::Result<()> {
        match self {
            ServerMessage::Notification { id, notification } => serde_json::to_writer(
                writer,
                &Call {
                    id,
                    method: notification.method(),
                    params: notification.params(),
                },
            ),
            ServerMessage::Response(r) => serde_json::to_writer(writer, r),
        }
    }
}

impl ServerMessage {
    /// A notification with a `null` id, the usual form.
    pub fn notification(notification: ServerNotification) -> Self {
        ServerMessage::Notification {
            id: Id::Null,
            notification,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sv1::client::Authorize;
    use crate::sv1::response::{ErrorCode, StratumError};

    fn line<M: Sv1Message>(m: &M) -> String {
        let mut b = BytesMut::new();
        m.encode_line(&mut b).unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn encodes_the_shapes_pools_and_miners_use() {
        let n = ServerMessage::notification(ServerNotification::SetDifficulty(2.0));
        assert_eq!(
            line(&n),
            "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[2.0]}\n"
        );
        let a = ClientMessage::Request {
            id: Id::from(2),
            request: ClientRequest::Authorize(Authorize {
                user: "w".into(),
                password: Some("x".into()),
            }),
        };
        assert_eq!(
            line(&a),
            "{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"w\",\"x\"]}\n"
        );
        let r = ServerMessage::Response(Response::error(
            Id::from(4),
            StratumError::new(ErrorCode::JobNotFound),
        ));
        assert_eq!(
            line(&r),
            "{\"id\":4,\"result\":null,\"error\":[21,\"Job not found\",null]}\n"
        );
    }

    #[test]
    fn classification() {
        let m = ServerMessage::from_line(
            br#"{"error":null,"id":0,"method":"client.reconnect","params":["h","1"]}"#,
        );
        assert!(matches!(m, Ok(ServerMessage::Notification { .. })));
        let m = ServerMessage::from_line(br#"{"id":1,"result":true}"#);
        assert!(matches!(m, Ok(ServerMessage::Response(_))));
        assert_eq!(
            ServerMessage::from_line(br#"{"id":1}"#),
            Err(Sv1Error::NotAMessage)
        );
        assert_eq!(
            ServerMessage::from_line(br#"[1]"#),
            Err(Sv1Error::NotAnObject)
        );
        assert_eq!(
            ServerMessage::from_line(br#"{"id":1,"method":5}"#),
            Err(Sv1Error::InvalidMethod)
        );
        assert_eq!(
            ClientMessage::from_line(br#"{"id":true,"result":1}"#),
            Err(Sv1Error::InvalidId)
        );
        assert_eq!(ClientMessage::from_line(b"\xff"), Err(Sv1Error::NotUtf8));
        assert!(matches!(
            ClientMessage::from_line(b"{\"id\":auth}"),
            Err(Sv1Error::InvalidJson(_))
        ));
        let bad =
            ClientMessage::from_line(br#"{"id":"9","method":"mining.submit","params":["w"]}"#);
        assert_eq!(
            bad.as_ref().err().and_then(Sv1Error::request_id),
            Some(&Id::from("9"))
        );
        assert_eq!(
            bad,
            Err(Sv1Error::InvalidParams {
                id: Id::from("9"),
                method: "mining.submit".into(),
                error: FieldError::Missing { field: "job_id" }
            })
        );
    }
}
