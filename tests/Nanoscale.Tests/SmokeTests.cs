using Nanoscale.Tests.Support;

namespace Nanoscale.Tests;

public class SmokeTests
{
    [Fact]
    public void SharedDataIsBesideTheRepository() => Assert.True(File.Exists(SharedData.Stories260K));
}
