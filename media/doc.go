// Package media carries parley's calls: WebRTC sessions on pion with an Opus
// audio pipeline (encode, RTP, adaptive jitter buffer, decode, loss
// concealment, in-band FEC), audio sources and sinks (tone, WAV, a
// speech-like test signal, microphone and speaker), Ogg Opus recording and
// call statistics with an E-model MOS estimate.
//
// It must never import libp2p or any other overlay code: signalling (offer,
// answer, trickled candidates) is carried by the caller, over the
// authenticated /parley/call/1.0.0 stream, as opaque strings. The DTLS
// fingerprint inside the SDP is what binds media to that authenticated
// identity; FingerprintFromSDP exposes it for logging and checks.
//
// # Signalling
//
// A call is one Session per side. The offerer calls CreateOffer, sends the
// SDP, and passes the peer's answer to SetAnswer; the answerer passes the
// offer to Answer and sends back the result. Both sides forward every string
// OnLocalCandidate produces (the JSON of an RTCIceCandidateInit, "" at the
// end of gathering) to the other side's AddRemoteCandidate. When the path
// dies, the offerer calls RestartICE and the exchange repeats.
//
// Limits on what the peer sends: an SDP is at most 64 KiB of UTF-8 with at
// most 16 media sections; it must offer opus/48000 in an audio section,
// give every audio and video section an a=mid and an rtpmap for each
// dynamic payload type, and carry ICE credentials and one DTLS fingerprint
// (all checked before pion sees it). A candidate is at most 4 KiB of JSON
// with a 1 KiB candidate line; at most 256 candidates are queued before the
// remote description arrives. Received RTP is at most 1500 bytes, an Opus
// packet at most 1500 bytes and 120 ms; the jitter buffer holds at most 64
// packets and at most JitterMax of delay; one audio track per call is read.
// Every decoder of bytes from outside (SDP, candidates, RTP and Opus, WAV)
// has a native fuzz target.
//
// # Media
//
// Audio is 48 kHz mono in 20 ms frames (RFC 7587 Opus over RTP, payload type
// 111, in DTLS-SRTP). Sending is paced by a 20 ms clock from when the call
// connects; with DTX, silent frames are not sent. Receiving runs an adaptive
// jitter buffer (see jitter.go) and a playout clock that feeds the Sink and
// the Recorder every 20 ms once the first frame has been decoded.
package media
