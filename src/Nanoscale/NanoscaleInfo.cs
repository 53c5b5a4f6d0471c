namespace Nanoscale; public static class NanoscaleInfo { public const string Version = "0.1.0"; }
