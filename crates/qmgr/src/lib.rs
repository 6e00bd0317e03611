//! The queue manager: schedules deliveries, retries, marks recipients done.
