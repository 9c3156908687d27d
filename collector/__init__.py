"""wildedge collector (server): receives detections over MQTT and hands them on."""
