//! Response bodies: the one type the layer answers with, reading a handler's body up to the
//! size limit, and handing on a body that was partly read (over the limit) unchanged.

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The error type of [`Body`]: whatever the handler's body failed with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response that passed through [`CacheLayer`](super::CacheLayer): the
/// stored bytes on a hit, the handler's body (read whole, or handed on as it streams) on a
/// miss. axum turns it into its own body type like any other.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of these bytes.
pub(super) fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// No body (a `304`, a `HEAD`).
pub(super) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// No body, and no word of its length either (the answer to a `HEAD` whose `GET` body's
/// length is not known): its size hint is not exact, as an empty body's (`0`) is.
pub(super) fn lengthless() -> Body {
    /// Ends at once, its size unsaid.
    struct Lengthless;

    impl HttpBody for Lengthless {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(None)
        }
    }

    Lengthless.boxed_unsync()
}

/// Any handler body as a [`Body`].
pub(super) fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// What reading a body up to a limit found.
pub(super) enum Read {
    /// All of it, within the limit.
    Whole(Bytes),
    /// More than the limit, trailers, or an error: the frames read so far and the rest,
    /// to hand on as they are.
    Partial(Body),
}

/// Reads `body` whole if it holds at most `max` bytes of data and no trailers.
pub(super) async fn read_up_to<B>(body: B, max: usize) -> Read
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    let mut seen = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Read::Whole(seen.freeze()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if seen.len() + data.len() <= max => seen.extend_from_slice(&data),
                Ok(data) => {
                    let head = [seen.freeze(), data].map(Frame::data);
                    return Read::Partial(resumed(head, None, body));
                }
                Err(frame) => {
                    // Trailers: not something a stored response replays.
                    return Read::Partial(resumed([Frame::data(seen.freeze()), frame], None, body));
                }
            },
            Some(Err(err)) => {
                let head = [Frame::data(seen.freeze())];
                return Read::Partial(resumed(head, Some(err.into()), body));
            }
        }
    }
}

fn resumed<B, const N: usize>(
    head: [Frame<Bytes>; N],
    failed: Option<BoxError>,
    rest: Pin<Box<B>>,
) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let head = head
        .into_iter()
        .filter(|f| f.data_ref().is_none_or(|d| !d.is_empty()))
        .collect();
    Resumed {
        head,
        failed,
        rest: Some(rest),
    }
    .boxed_unsync()
}

/// A body of which the first frames were already read: those, then the rest as it comes.
struct Resumed<B> {
    head: VecDeque<Frame<Bytes>>,
    /// The error reading stopped at: reported after `head`, and the body ends.
    failed: Option<BoxError>,
    rest: Option<Pin<Box<B>>>,
}

impl<B> HttpBody for Resumed<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every field is Unpin (the rest is boxed).
        let this = self.get_mut();
        if let Some(frame) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(err) = this.failed.take() {
            this.rest = None;
            return Poll::Ready(Some(Err(err)));
        }
        match this.rest.as_mut() {
            Some(rest) => rest.as_mut().poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty()
            && self.failed.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let head: u64 = self
            .head
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}
