//! Notifications: channels configured by URL (Watchtower/shoutrrr style), sent with retries and
//! never blocking an update.
